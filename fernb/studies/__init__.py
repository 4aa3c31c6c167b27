"""The papers' experimental protocols, one module per paper; each study stores every finished
run on disk so an interrupted study resumes where it stopped."""
