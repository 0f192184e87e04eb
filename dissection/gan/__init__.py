"""GAN dissection (Bau et al., ICLR 2019): which units of a generator draw which concepts, by IoU with a
segmenter's labels of generated samples (`dissect`), proven by removing and inserting them (`effects`);
the toy generator and segmenter (`toys`, `train`) and the CLI (`cli`)."""
