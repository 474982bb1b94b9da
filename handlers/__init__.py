"""Job handlers, found as handlers/<job_type>/<model>/<mode>.py and loaded with importlib."""
