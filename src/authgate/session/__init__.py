"""Sessions: sealed cookies, the session model and cookie header helpers."""

from authgate.session.codec import SessionCodec
from authgate.session.model import Session, new_session_id
from authgate.session.sealed import SealedBox, same_text

__all__ = ["SealedBox", "Session", "SessionCodec", "new_session_id", "same_text"]
