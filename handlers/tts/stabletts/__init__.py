"""StableTTS handlers: ``training``, ``inference`` and ``training_and_inference`` (shared steps in ``steps``)."""
