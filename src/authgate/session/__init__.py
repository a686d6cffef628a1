"""Sessions: the session model, sealed values and cookie header helpers (the session cookie is a
sealed reference, `authgate.session.reference`; the sessions live in `authgate.session.store`)."""

from authgate.session.model import Session, new_session_id
from authgate.session.sealed import SealedBox, same_text

__all__ = ["SealedBox", "Session", "new_session_id", "same_text"]
