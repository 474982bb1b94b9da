"""Wav2Vec2-BERT handlers: ``training``, ``inference`` and ``training_and_inference``.

They orchestrate; the ``asr`` package trains, transcribes and reads the job's settings
(``asr.job_settings``). The shared steps live beside them: ``job_inputs`` (the base models and checkpoints
the manifest names, fetched), ``training_run`` (fine-tuning with heartbeats and resumable state),
``transcription`` (cells in, text out) and ``recording_check`` (the takes heard against their text).
"""
