"""Ingest: raw bytes -> parse/convert -> validate as FHIR R4 -> inbox + store + log leaves, durably.

:meth:`Pipeline.ingest_many` handles a group of messages: each is converted and validated first
(pure computing, :func:`prepare`, in worker processes when configured), then one transaction keeps
every raw message together with its resource versions, Provenance, log leaves and inbox status.
That commit is the durable point before which no ``AA``/``CA`` may be sent.  Grouping several
messages per commit is what lets ingest keep up: a commit costs an fsync, a row does not.  When the
group's transaction fails, the raw messages are kept in a transaction of their own first, then
their versions are stored message by message, so one bad message costs no other.

Nothing received is dropped: a message that cannot be parsed, mapped or validated stays in the inbox
with status ``error`` and its reason; :meth:`Pipeline.reprocess` runs it again after a mapping fix.
"""

from __future__ import annotations

import logging
import marshal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from anchoring.db import Cursor, Database

from . import ack
from .fhir_dates import now_instant
from .hl7.types import Conversion, HL7Error, MessageHeader
from .inbox import ERROR, RECEIVED, STORED, Inbox, InboxMessage, content_sha256
from .provenance import canonical_provenance, provenance_id
from .store import (
    CanonicalResource,
    ResourceStore,
    VersionBatch,
    canonical_resource,
    canonical_template,
    content_key_of,
)
from .validation import validate_resource

log = logging.getLogger("fhir_bridge.pipeline")

Converter = Callable[[bytes], Conversion]
HeaderReader = Callable[[bytes], MessageHeader]
NOT_KEPT = "not-kept"  # the database refused the raw message: nothing was acknowledged


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    source: str = ""  # where it came from: "mllp:1.2.3.4:5678", "file:inbox/a.hl7", "cli:a.hl7"
    rejected: HL7Error | None = None  # known unusable before conversion (a broken batch envelope): kept as error


@dataclass
class Outcome:
    message_id: int | None
    header: MessageHeader
    header_readable: bool
    status: str  # received | stored | error | not-kept
    error: HL7Error | None = None
    duplicate: bool = False
    versions: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)

    @property
    def committed(self) -> bool:
        return self.message_id is not None

    @property
    def ack_code(self) -> str:
        """The application acknowledgement code this outcome earns (original mode)."""
        if not self.committed:
            return "AR"
        return ack.application_code(self.status == STORED, self.error or _PENDING, self.header_readable)

    def acknowledgements(self, now: datetime | None = None) -> list[tuple[str, bytes]]:
        error = self.error if self.status != RECEIVED else _PENDING
        return ack.responses(self.header, self.committed, self.status == STORED, error, self.header_readable, now)

    def as_json(self) -> dict:
        error = None
        if self.error is not None:
            error = {"code": self.error.code, "location": self.error.location, "text": self.error.text}
        return {
            "id": self.message_id, "control_id": self.header.control_id, "sender": self.header.sender,
            "message_type": self.header.message_type, "status": self.status, "ack_code": self.ack_code,
            "duplicate": self.duplicate, "error": error, "versions": self.versions, "unmapped": self.unmapped,
        }


_PENDING = HL7Error("207", "", "the message is kept but its conversion did not finish; it will be reprocessed")


@dataclass
class Prepared:
    """What converting and validating one message gave: resources, or the reason there are none."""

    resources: list[dict] = field(default_factory=list)
    error: HL7Error | None = None
    unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    canonical: list[CanonicalResource] = field(default_factory=list)  # what the store needs, per resource


#: Resources already validated and canonicalised, by content key (a ``str``) and by the
#: :func:`marshal.dumps` of the resource as the converter built it (``bytes``).  Feeds repeat the
#: same Practitioner, Location and Organization in message after message; validating identical
#: content again would give the same answer.  Cleared when full; private to the process.
_VALIDATED: dict[str | bytes, CanonicalResource] = {}
VALIDATED_CACHE_SIZE = 40_000  # entries: two per resource, one per key


def _exact_key(resource: dict) -> bytes | None:
    """The resource's value, types and key order included, as bytes (None if marshal cannot say).

    About ten times cheaper than the canonical form with its SHA-256 (1.5 against 14 microseconds
    a repeated Practitioner, Location or Organization), so a repeat costs neither.  Version 0
    writes every string and number the same way whatever object holds it (no sharing, no
    interning), and marshal reads its bytes back into the value it wrote: equal bytes, equal value
    (a ``1`` and a ``1.0`` or ``True`` differ, as they do in JSON).  The bytes themselves are the
    key (700 bytes a resource on average), so a match is exact, not a digest's.  The same content in another
    key order gives other bytes and is found by its content key instead.
    """
    try:
        return marshal.dumps(resource, 0)
    except ValueError:  # not plain data (a dict subclass, an object): the content key alone decides
        return None


class _ExactKeyUse:
    """Whether the exact key is worth computing for a resource type, judged on what it found.

    It pays for repeats (a doctor, a ward, the sending facility: found for 2.7 microseconds) and
    costs 9 microseconds for nothing on content met once (a patient, an encounter, an observation:
    five a message in a feed).  Per type, every ``WINDOW`` tries decide the next stretch: with fewer
    than ``MIN_HITS`` hits the key is only tried for one resource in ``PROBE_EVERY``, so a type that
    starts repeating is noticed again.  Skipping it changes no result: such content is still found
    by its content key, or validated."""

    WINDOW, MIN_HITS, PROBE_EVERY = 256, 8, 16

    def __init__(self) -> None:
        self._types: dict[object, list] = {}  # type -> [tries, hits, worth it, resources since a probe]

    def wanted(self, res_type: object) -> bool:
        state = self._types.get(res_type)
        if state is None:
            state = self._types[res_type] = [0, 0, True, 0]
        if state[2]:
            return True
        state[3] += 1
        if state[3] >= self.PROBE_EVERY:
            state[3] = 0
            return True
        return False

    def found(self, res_type: object, hit: bool) -> None:
        state = self._types[res_type]
        state[0] += 1
        state[1] += hit
        if state[0] >= self.WINDOW:
            state[:3] = [0, 0, state[1] >= self.MIN_HITS]

    def clear(self) -> None:
        self._types.clear()


_EXACT_USE = _ExactKeyUse()


def forget_checked() -> None:
    """Start cold, as a fresh process does: no resource validated yet, no judgement of exact keys."""
    _VALIDATED.clear()
    _EXACT_USE.clear()


def _checked(resource: dict, validate: Callable[[dict], None]) -> CanonicalResource:
    res_type = resource.get("resourceType")
    exact = _exact_key(resource) if _EXACT_USE.wanted(res_type) else None
    if exact is not None:
        known = _VALIDATED.get(exact)
        _EXACT_USE.found(res_type, known is not None)
        if known is not None:
            return known
    template = canonical_template(resource)
    key = content_key_of(template)
    known = _VALIDATED.get(key)  # the key covers resourceType and id too
    if known is None:
        validate(resource)
        known = canonical_resource(resource, template, key)
    if len(_VALIDATED) >= VALIDATED_CACHE_SIZE:
        _VALIDATED.clear()
    _VALIDATED[key] = known
    if exact is not None:
        _VALIDATED[exact] = known
    return known


def prepare(raw: bytes, convert: Converter, validate: Callable[[dict], None] = validate_resource) -> Prepared:
    """Convert and validate one message (pure: no I/O).  Never raises for bad input."""
    try:
        conversion = convert(raw)
    except HL7Error as exc:
        return Prepared(error=exc)
    except Exception as exc:  # a converter bug must not lose the message: keep it as an error
        log.exception("the converter failed")
        return Prepared(error=HL7Error("207", "", f"the converter failed ({type(exc).__name__}: {exc}); "
                                                  "report it, then reprocess the message"))
    prepared = Prepared(unmapped=list(conversion.unmapped), warnings=list(conversion.warnings))
    seen: set[tuple[str, str]] = set()
    for resource in conversion.resources:
        key = (resource.get("resourceType"), resource.get("id"))
        if not isinstance(key[1], str) or not key[1] or key in seen:
            error = HL7Error("207", str(key[0]), f"the converter gave {key[0]} "
                             f"{'no id' if not key[1] else 'the id ' + repr(key[1]) + ' twice'}; fix the mapping")
            return Prepared(error=error, unmapped=prepared.unmapped, warnings=prepared.warnings)
        try:
            checked = _checked(resource, validate)
        except HL7Error as exc:
            return Prepared(error=exc, unmapped=prepared.unmapped, warnings=prepared.warnings)
        seen.add(key)  # type: ignore[arg-type]
        prepared.resources.append(resource)
        prepared.canonical.append(checked)
    return prepared


@dataclass(frozen=True)
class PreparedGroup:
    """A group of messages with everything computed that storing them needs (see prepare_group)."""

    items: list[Incoming]
    now: str  # their time of receipt
    heads: list[tuple[MessageHeader, bool, HL7Error | None]]
    digests: list[str]
    prepared: list[Prepared | None]


@dataclass
class _Work:
    message_id: int
    header: MessageHeader
    header_readable: bool
    header_error: HL7Error | None
    digest: str
    received_at: str
    raw: bytes
    prepared: Prepared | None = None


class _Begun:
    """A group's headers, hashes and time of receipt, and which of its messages are to be converted
    (those with a readable header, not rejected already): what both halves of preparing need."""

    def __init__(self, pipeline: Pipeline, items: Sequence[Incoming]) -> None:
        self.items = list(items)
        self.heads = [pipeline.header(item.raw) for item in self.items]
        self.digests = [content_sha256(item.raw) for item in self.items]
        self.now = pipeline.clock()
        self.todo = [i for i, (item, (_, ok, _)) in enumerate(zip(self.items, self.heads, strict=True))
                     if ok and item.rejected is None]
        self.raws = [self.items[i].raw for i in self.todo]

    def group(self, results: list[Prepared]) -> PreparedGroup:
        """The group, with ``results`` (one per message to convert, in order) in their places."""
        prepared: list[Prepared | None] = [None] * len(self.items)
        for i, result in zip(self.todo, results, strict=True):
            prepared[i] = result
        return PreparedGroup(self.items, self.now, self.heads, self.digests, prepared)


class Pipeline:
    """Ingest for every adapter.  ``convert`` is the conversion engine bound to its mappings."""

    def __init__(
        self, db: Database, convert: Converter, read_header: HeaderReader | None = None,
        clock: Callable[[], str] = now_instant,
        prepare_many: Callable[[Sequence[bytes]], list[Prepared]] | None = None,
    ) -> None:
        if read_header is None:
            from .hl7.parser import parse_header

            read_header = parse_header
        self.db, self.convert, self.read_header, self.clock = db, convert, read_header, clock
        self.inbox, self.store = Inbox(db), ResourceStore(db)
        self.prepare_many = prepare_many  # groups converted elsewhere (a PreparePool), or None: here

    def ensure_schema(self) -> None:
        self.inbox.ensure_schema()
        self.store.ensure_schema()

    def close(self) -> None:
        """Stop the worker processes, if any (the database belongs to the caller)."""
        close = getattr(self.prepare_many, "close", None)
        if close is not None:
            close()

    # -- the header: enough to keep and answer any message ------------------------------------

    def header(self, raw: bytes) -> tuple[MessageHeader, bool, HL7Error | None]:
        """(header, readable, error); an unreadable header gets a best-effort one for the ACK."""
        try:
            return self.read_header(raw), True, None
        except HL7Error as exc:
            return ack.best_effort_header(raw), False, exc
        except Exception as exc:  # the header reader must never cost us a message
            log.exception("reading MSH failed")
            return ack.best_effort_header(raw), False, HL7Error("100", "MSH", f"MSH cannot be read ({type(exc).__name__})")

    # -- ingest ---------------------------------------------------------------------------------

    def ingest(self, raw: bytes, source: str = "") -> Outcome:
        return self.ingest_many([Incoming(raw, source)])[0]

    def ingest_many(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Keep, convert and store a group of messages; one outcome per item, in order. Never raises.

        Conversion comes first (pure computing, in worker processes when configured); then one
        transaction keeps every raw message with its versions, Provenance, leaves and status, so a
        group costs one commit.  Nothing is acknowledged before that commit, so a crash in between
        loses nothing a sender was told of.  If the group cannot be committed, the raw messages are
        kept on their own first and their versions stored one message at a time.
        """
        return self.store_group(self.prepare_group(items))

    def prepare_group(self, items: Sequence[Incoming]) -> PreparedGroup:
        """The computing half of :meth:`ingest_many` (headers, hashes, conversion): no database, so a
        group can be converted while the one before it is stored.  Never raises."""
        begun = _Begun(self, items)
        return begun.group(self._prepare_raws(begun.raws))

    def start_group(self, items: Sequence[Incoming]) -> Callable[[], PreparedGroup]:
        """:meth:`prepare_group` begun: the whole group goes to one conversion worker, and the call
        returned waits for its answer, so that the caller can start the next group on another worker
        meanwhile.  Without workers (or if they fail) the group is converted in this process, by
        that call.  Never raises."""
        begun = _Begun(self, items)
        submit = getattr(self.prepare_many, "submit", None)
        answer: Callable[[], list[Prepared]] | None = None
        if submit is not None and begun.raws:
            try:
                answer = submit(begun.raws)
            except Exception as exc:  # no worker could take it: converted here when asked for
                log.error("conversion workers failed (%s); converting in this process", exc)

        def finish() -> PreparedGroup:
            if answer is not None:
                try:
                    return begun.group(answer())
                except Exception as exc:  # the worker died or failed: convert here rather than fail the group
                    log.error("conversion workers failed (%s); converting in this process", exc)
            return begun.group([prepare(raw, self.convert) for raw in begun.raws])

        return finish

    def store_group(self, group: PreparedGroup) -> list[Outcome]:
        """The storing half of :meth:`ingest_many`: one outcome per item, in order.  Never raises."""
        items, now, heads, digests, prepared = group.items, group.now, group.heads, group.digests, group.prepared
        try:
            with self.db.transaction(write=True) as cur:
                kept = self._keep(cur, items, heads, digests, now)
                work, earlier = self._work(cur, items, heads, digests, kept, prepared, now)
                finished = self._store(cur, list(work.values()))
            return _in_order(kept, earlier, finished)
        except Exception as exc:
            log.warning("the group commit of %d message(s) failed (%s); keeping them first", len(items), exc)
        try:
            with self.db.transaction(write=True) as cur:
                kept = self._keep(cur, items, heads, digests, now)
                work, earlier = self._work(cur, items, heads, digests, kept, prepared, now)
        except Exception as exc:
            log.error("could not keep %d message(s): %s", len(items), exc)
            failure = HL7Error("207", "", "the bridge could not store the message (database unavailable); resend it later")
            return [Outcome(None, h, ok, NOT_KEPT, failure) for h, ok, _ in heads]
        return _in_order(kept, earlier, self._process(list(work.values())))

    @staticmethod
    def _keep(cur: Cursor, items: Sequence[Incoming], heads: list, digests: list[str], now: str) -> list[tuple[int, bool]]:
        return [
            Inbox.receive(cur, item.raw, h.sender if ok else "", h.control_id if ok else "", _type_label(h),
                          item.source, now, digest)
            for item, (h, ok, _), digest in zip(items, heads, digests, strict=True)
        ]

    @staticmethod
    def _work(
        cur: Cursor, items: Sequence[Incoming], heads: list, digests: list[str], kept: list[tuple[int, bool]],
        prepared: list[Prepared | None], now: str,
    ) -> tuple[dict[int, _Work], dict[int, Outcome]]:
        """What is left to store, by message id, and the outcomes of messages finished earlier."""
        work: dict[int, _Work] = {}
        earlier: dict[int, Outcome] = {}
        for item, (h, ok, err), digest, (message_id, duplicate), p in zip(
            items, heads, digests, kept, prepared, strict=True
        ):
            if message_id in work:  # the same message twice in one group
                continue
            received_at = now
            if duplicate:
                previous = Inbox.read(cur, message_id)
                if previous.status != RECEIVED:  # a message kept but never finished is finished now
                    earlier[message_id] = _outcome_from_row(previous, h, ok)
                    continue
                received_at = previous.received_at
            w = _Work(message_id, h, ok, err, digest, received_at, item.raw, p)
            if item.rejected is not None:
                w.prepared = Prepared(error=item.rejected)
            work[message_id] = w
        return work, earlier

    def reprocess(self, message_id: int) -> Outcome:
        """Convert a kept message again (after a mapping fix); unchanged resources get no new version."""
        message = self.inbox.get(message_id)
        raw = self.inbox.raw(message_id)
        h, ok, err = self.header(raw)
        return self._process([_Work(message_id, h, ok, err, message.content_sha256, message.received_at, raw)])[message_id]

    def reprocess_all(self, status: str = ERROR) -> list[Outcome]:
        return [self.reprocess(i) for i in self.inbox.ids(status)]

    def recover(self) -> list[Outcome]:
        """Finish messages kept but never converted (the process stopped in between)."""
        return self.reprocess_all(RECEIVED)

    # -- converting and storing -------------------------------------------------------------------

    def _prepare_raws(self, raws: list[bytes]) -> list[Prepared]:
        # A single message goes to the workers too: a round trip costs less than converting it
        # here, where it would hold the interpreter lock the listener and the writes need
        if self.prepare_many is not None and raws:
            try:
                return self.prepare_many(raws)
            except Exception as exc:  # a worker process died: convert here rather than fail the group
                log.error("conversion workers failed (%s); converting in this process", exc)
        return [prepare(raw, self.convert) for raw in raws]

    def _prepare(self, work: list[_Work]) -> None:
        todo = [w for w in work if w.header_readable and w.prepared is None]
        for w, result in zip(todo, self._prepare_raws([w.raw for w in todo]), strict=True):
            w.prepared = result
        for w in work:
            if w.prepared is None:
                w.prepared = Prepared(error=w.header_error)

    def _process(self, work: list[_Work]) -> dict[int, Outcome]:
        if not work:
            return {}
        self._prepare(work)
        try:
            return self._commit(work)
        except Exception as exc:
            if len(work) == 1:
                return {work[0].message_id: self._fail(work[0], exc)}
            log.warning("group commit of %d messages failed (%s); committing them one by one", len(work), exc)
        out = {}
        for w in work:
            try:
                out.update(self._commit([w]))
            except Exception as exc:
                out[w.message_id] = self._fail(w, exc)
        return out

    def _commit(self, work: list[_Work]) -> dict[int, Outcome]:
        with self.db.transaction(write=True) as cur:
            return self._store(cur, work)

    def _store(self, cur: Cursor, work: list[_Work]) -> dict[int, Outcome]:
        """Store the versions of each message (or record its error), inside the caller's transaction."""
        for w in work:
            if w.prepared is None:
                w.prepared = Prepared(error=w.header_error)
        keys = []
        for w in work:
            if w.prepared is not None and w.prepared.error is None and w.prepared.canonical:
                keys += [(c.res_type, c.res_id) for c in w.prepared.canonical]
                keys.append(("Provenance", provenance_id(w.digest)))
        self.store.lock(cur, keys)
        batch = self.store.batch(cur, self.store.latest(cur, keys))  # one lookup and one write per table
        done = {w.message_id: self._finish(cur, w, batch) for w in work}
        batch.flush()
        return done

    def _finish(self, cur: Cursor, w: _Work, batch: VersionBatch) -> Outcome:
        now, p = self.clock(), w.prepared
        assert p is not None  # set by _prepare
        if p.error is not None:
            code = ack.application_code(False, p.error, w.header_readable)
            Inbox.mark_error(cur, w.message_id, p.error, code, now, p.unmapped, _type_label(w.header))
            return Outcome(w.message_id, w.header, w.header_readable, ERROR, p.error, unmapped=p.unmapped)
        refs = [batch.put(c, now, w.message_id).reference for c in p.canonical]
        if refs:
            provenance = canonical_provenance(w.digest, w.header, w.received_at, refs)
            refs.append(batch.put(provenance, now, w.message_id).reference)
        Inbox.mark_stored(cur, w.message_id, refs, p.unmapped, p.warnings, now)
        return Outcome(w.message_id, w.header, True, STORED, None, versions=refs, unmapped=p.unmapped)

    def _fail(self, w: _Work, exc: Exception) -> Outcome:
        """Storing failed: the raw message stays kept; record why if the database lets us."""
        log.error("message %s: storing its versions failed: %s", w.message_id, exc)
        error = HL7Error("207", "", f"storing the converted resources failed ({type(exc).__name__}); "
                                    "run `fhir-bridge messages reprocess ID` once the cause is fixed")
        code = ack.application_code(False, error)
        try:
            with self.db.transaction(write=True) as cur:
                Inbox.mark_error(cur, w.message_id, error, code, self.clock())
            status = ERROR
        except Exception:
            status = RECEIVED  # kept; `recover` finishes it
        return Outcome(w.message_id, w.header, w.header_readable, status, error)


def _type_label(header: MessageHeader) -> str:
    return header.message_type + (f"^{header.message_structure}" if header.message_structure else "")


def _in_order(kept: list[tuple[int, bool]], earlier: dict[int, Outcome], finished: dict[int, Outcome]) -> list[Outcome]:
    out = []
    for message_id, duplicate in kept:
        done = earlier.get(message_id) or finished[message_id]
        out.append(Outcome(**{**done.__dict__, "duplicate": True}) if duplicate else done)
    return out


def _outcome_from_row(row: InboxMessage, header: MessageHeader, readable: bool) -> Outcome:
    return Outcome(row.id, header, readable, row.status, row.error, True, list(row.versions), list(row.unmapped))


def pipeline_from_config(db: Database, mapping_override_dir: str | None = None, workers: int = 0,
                         id_key_file: Path | None = None) -> Pipeline:
    """The pipeline with the real conversion engine and the mappings (plus a site's overrides);
    ``workers`` > 0 converts and validates in that many worker processes; ``id_key_file``: the
    store's resource-id key (:func:`bridge.id_key.resource_id_key_file`), None for unkeyed ids."""
    from .convert import convert, load_mappings
    from .id_key import read_id_key

    mappings = load_mappings(mapping_override_dir or None)
    id_key = read_id_key(id_key_file) if id_key_file else None

    def run(raw: bytes) -> Conversion:
        return convert(raw, mappings, id_key)

    pool = None
    if workers > 0:
        from .prepare_pool import PreparePool

        pool = PreparePool(workers, mapping_override_dir, id_key_file)  # each worker reads the key itself
    pipeline = Pipeline(db, run, prepare_many=pool)
    pipeline.ensure_schema()
    return pipeline


def ingest_all(pipeline: Pipeline, raws: Iterable[tuple[bytes, str]], group: int = 64) -> list[Outcome]:
    """Ingest (raw, source) pairs in groups of ``group`` messages per commit."""
    out: list[Outcome] = []
    batch: list[Incoming] = []
    for raw, source in raws:
        batch.append(Incoming(raw, source))
        if len(batch) >= group:
            out += pipeline.ingest_many(batch)
            batch = []
    if batch:
        out += pipeline.ingest_many(batch)
    return out
