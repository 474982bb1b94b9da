"""Wav2Vec2-BERT speech recognition: text normalisation, vocabulary, model building, batched CTC
transcription, a light post-corrector and safe model archives.

The two entry points live at the top level: ``train_w2v2bert_asr.py`` (fine-tuning) and
``inference_w2v2bert_asr.py`` (transcription). This package holds the parts both of them use.
"""
