"""The voice model: encoder, duration predictor, SSM decoder, checkpoints."""
