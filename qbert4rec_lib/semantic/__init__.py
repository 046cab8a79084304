"""Stages 0-2: from item content to semantic IDs. Features (text, image, structural) -> fusion (stage 1, the ID query
attends over the modalities) -> RQ-VAE quantization (stage 2, a few tokens per item).

Where to change what:

* which features are built, their cache keys: ``semantic/features.py`` (``FeatureConfig``); the encoders
  themselves: ``semantic/encoders.py``; the catalog-fitted CLIP: ``semantic/clip.py``
* neighbour purity / overlap of a modality: ``semantic/similarity.py``
* stage 1 (config, losses, training, cache): ``semantic/fusion.py``; the model (alignment, cross-modal blocks, gated
  depth): ``semantic/fusion_model.py``; new items' queries: ``semantic/fusion_queries.py``
* stage 2 (codebook size, levels, training, semantic IDs and collisions, cache): ``semantic/quantize.py``
  (``RQVAEConfig``); the RQ-VAE itself (residual codebooks, k-means init, dead codes): ``semantic/rqvae.py``; codebook
  health and purity: ``semantic/code_health.py``
* the epoch loop both stages train with (AdamW, seeded item order, per-epoch records): ``semantic/epochs.py``
"""
