"""Edge-deployment toolkit: PP-OCR model -> QAT -> export -> Paddle Lite .nb -> device bundle."""

__version__ = "0.1.0"
