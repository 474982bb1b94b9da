"""Text-to-speech job handlers (``handlers/tts/<model>/<mode>.py``)."""
