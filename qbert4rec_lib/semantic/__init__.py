"""Stages 0-2: from item content to semantic IDs. Features (text, image, structural) -> fusion (stage 1, the ID query
attends over the modalities) -> RQ-VAE quantization (stage 2, a few tokens per item).

Where to change what:

* which features are built, their cache keys: ``semantic/features.py`` (``FeatureConfig``); the encoders
  themselves: ``semantic/encoders.py``; the catalog-fitted CLIP: ``semantic/clip.py``
* neighbour purity / overlap of a modality: ``semantic/similarity.py``
* stage 1 (fusion model, losses, training, cache): ``semantic/fusion.py``; new items' queries: ``semantic/fusion_queries.py``
* stage 2 (codebook size, levels, RQ-VAE training): ``semantic/quantize.py`` (``RQVAEConfig``); codebook health and
  purity: ``semantic/code_health.py``
"""
