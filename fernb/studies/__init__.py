"""The papers' experimental protocols, one module per chapter.

Each module declares its chapter's parameters once, as its ``Settings``
(:class:`fernb.params.ChapterSettings`; the chapter notebook names it in its metadata), which
the runner checks before the kernel starts and the notebook's first cell checks again; the
studies store every finished run on disk, so an interrupted study resumes where it stopped.
"""
