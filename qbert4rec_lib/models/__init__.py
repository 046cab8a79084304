"""Stage 3 and the baselines: sequence models over item IDs or semantic-ID tokens. They depend on neither the data,
the stages nor the trainer: training and evaluation are :mod:`qbert4rec_lib.experiments`'.

Where to change what:

* the model contract (``loss``, ``score_all``, padding, length groups): ``models/base.py``
* the mask policy (pretraining mixture, fine-tuning tail emphasis): ``models/masking.py``
* Q-Bert4Rec (embeddings of the tokens, encoder, objectives, transfer of weights): ``models/qbert.py``; its item head
  (token_mlp / level_sum scores, item vectors, chunked / sampled item losses): ``models/qbert_head.py``
* SASRec-CE, BERT4Rec-ID, Popularity: ``models/baselines.py``
* padding masks, weight init, width/heads checks shared by the transformers: ``models/layers.py``
"""
