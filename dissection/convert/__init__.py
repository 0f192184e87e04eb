"""Converters from the datasets people have to the Broden format (`python -m dissection convert`), and
segmenter-made probe sets (`python -m dissection segment`). One writer (`writer`) serves them all."""
