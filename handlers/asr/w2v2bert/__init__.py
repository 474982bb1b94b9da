"""Wav2Vec2-BERT handlers: ``training``, ``inference`` and ``training_and_inference``.

The shared steps live beside them: ``job_inputs`` (manifest settings, base models and checkpoints),
``training_run`` (fine-tuning with heartbeats and resumable state) and ``transcription`` (cells in, text out).
"""
