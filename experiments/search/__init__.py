"""Search one's own videos with a trained checkpoint: index a folder once, query it by text.

* ``python -m experiments.search index --ckpt CKPT --videos DIR --out INDEX`` decodes and encodes every video once
  with the checkpoint's method (Lightning ``predict``, any accelerator and device count), writes resumable shards,
  and builds a FAISS index over each method's query-independent embedding (``BaseRetrievalModule.index_embedding``);
* ``python -m experiments.search query --index INDEX "a man is singing"`` ranks the videos: the FAISS search, then,
  for a method whose score depends on the query (NarVid), its full similarity on the first stage's top N;
  ``--html`` writes a page with thumbnails and ``--serve`` answers a search box on 127.0.0.1.

Modules: ``checkpoint`` (loading a retriever and hashing its file), ``collection`` (listing and decoding a folder),
``indexer`` (encoding, shards, manifest), ``vector_index`` (FAISS), ``searcher`` (the two stages), ``page`` (HTML and
the local server), ``cli``.
"""
