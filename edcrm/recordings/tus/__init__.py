"""The tus domain: recordings uploaded with the tus 1.0 protocol, over any number of requests, straight
into the multipart upload of their final object. edcrm.routes.tus speaks the protocol (headers,
authentication, ownership); this package knows nothing of HTTP.

    upload = tus.create(user, call_log, length=n, metadata={...})    # POST
    tus.append(upload, offset=0, body=stream, checksum=("sha1", d))  # PATCH (and creation-with-upload)
    tus.state(upload)                                                # HEAD
    tus.terminate(upload)                                            # DELETE
"""

from .session import CHECKSUM_ALGORITHMS, TusState, append, create, state, terminate

__all__ = ["CHECKSUM_ALGORITHMS", "TusState", "append", "create", "state", "terminate"]
