"""Speech-recognition job handlers (``handlers/asr/<model>/<mode>.py``)."""
