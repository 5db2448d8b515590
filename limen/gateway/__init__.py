"""The teleworker logic (DESIGN.md): the dispatcher (:mod:`.gateway`), set-side registrar
and challenges (:mod:`.registrar`, :mod:`.auth`), ICP-side registrations
(:mod:`.upstream`), the call controller (:mod:`.calls`), keepalives (:mod:`.keepalive`),
the media interface (:mod:`.media`, :mod:`.relay`) and the asyncio adapter around the
transaction layer (:mod:`.stack`)."""
