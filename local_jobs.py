"""The old name of ``local_store.py`` (the design card's), kept so imports written against it still work."""
from local_store import *  # noqa: F401,F403
