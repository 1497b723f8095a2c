"""The streaming engine every analysis plugs into.

- :mod:`~netdissect.engine.sources`: where inputs and concept labels come from
  (stored concept data, images + a segmenter, a generator);
- :mod:`~netdissect.engine.passes`: one generic pass, source -> model ->
  statistic group, resumable, sharded across processes;
- :mod:`~netdissect.engine.cache`, :mod:`~netdissect.engine.checkpoint`:
  the activation cache and resumable state, keyed by content;
- :mod:`~netdissect.engine.distributed`: ``torch.distributed`` ranks and merges;
- :mod:`~netdissect.engine.plan`: layer shapes and the run's key before the first batch.
"""
