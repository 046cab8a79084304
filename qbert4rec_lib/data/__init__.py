"""The input of everything: one :class:`~qbert4rec_lib.data.dataset.Dataset` (sequences + item metadata + the
modalities it has) and its leave-one-out split.

Where to change what:

* the Dataset, the split, the k-core filter: ``data/dataset.py``
* which file format a folder holds, building the Dataset from what a reader returns: ``data/loaders.py``
* a format's reader: ``data/recbole.py`` (sequence file, RecBole atomic files), ``data/amazon.py`` (review dumps);
  line reading and field parsing they share: ``data/parsing.py``
* the generated default catalog: ``data/synthetic.py`` (what is generated), ``data/synthetic_images.py`` (its images),
  ``data/synthetic_folder.py`` (the folder on disk, ``load_default``)
* downloading Amazon data: ``data/download.py``; item images from URLs or files: ``data/images.py``
"""
