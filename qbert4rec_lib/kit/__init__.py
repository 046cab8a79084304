"""Around the library: the headless CLI, running the notebooks, what notebooks record and show.

Where to change what:

* a CLI command: ``kit/commands.py``; its arguments: ``kit/cli.py``
* running every notebook under a parameter set, the README's results blocks: ``kit/reproduce.py``
* what a notebook records (``Recorder``), interactive widgets: ``kit/notebook.py``
* saving and showing figures, HTML item cards: ``kit/viz.py``; the figures themselves: ``kit/plots.py``
* the notebooks' explorers (an item's neighbours, a code, a recommendation): ``kit/explore.py``; the data behind
  their views (prefix neighbours, shared tokens, top-k and ranks): ``kit/explore_data.py``
"""
