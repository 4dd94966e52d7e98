"""From photographs to item features: decoding (decode.py), the backbones and the saved feature
extractor (extractor.py), the batch job behind `curator features` (batch.py)."""
