"""The node's recent frames of channels with history, so most recoveries need no Redis read and no
encoding (docs/history.md, "Replays").

For each channel the node serves, the cache holds the frames of the latest events as the hub framed
them for delivery, one contiguous run of positions per channel. A frame is kept once per node however
many sockets are in the channel. A recovery whose position falls inside the run replays from it, and
whatever reaches the node later arrives through the bus as usual. A run breaks (and starts again) when
an event arrives whose offset does not follow the last one, e.g. after the node's bus subscription
lost messages; the run of a channel the node stops serving is dropped, because nothing keeps it
contiguous any more.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from shared.history.base import parse_position

# Frames kept per channel, and for all channels of the node together (least recently used runs go first).
CACHE_EVENTS_PER_CHANNEL = 2000
CACHE_BYTES = 64 * 1024 * 1024

Topic = tuple[str, str]
# (payload, wire, excluded socket): what the hub sent, and who it was not sent to.
Frame = tuple[bytes, bytes, str | None]


class _Run:
    __slots__ = ("epoch", "first", "frames", "size")

    def __init__(self, epoch: str, first: int) -> None:
        self.epoch = epoch
        self.first = first  # offset of frames[0]
        self.frames: deque[Frame] = deque()
        self.size = 0  # bytes held

    @property
    def next(self) -> int:
        """The offset that would continue the run."""
        return self.first + len(self.frames)


def _cost(frame: Frame) -> int:
    return len(frame[0]) + len(frame[1])


class ReplayCache:
    def __init__(self, per_channel: int = CACHE_EVENTS_PER_CHANNEL, max_bytes: int = CACHE_BYTES) -> None:
        self.per_channel = per_channel
        self.max_bytes = max_bytes
        self._runs: OrderedDict[Topic, _Run] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def add(self, topic: Topic, position: str, frame: Frame) -> None:
        """A frame the hub just delivered (positions arrive in order per channel)."""
        parsed = parse_position(position)
        if parsed is None:
            return
        epoch, offset = parsed
        run = self._runs.get(topic)
        if run is not None and run.epoch == epoch and offset < run.next:
            return  # already kept (a replayed read got there first), or older than the run
        if run is None or run.epoch != epoch or offset != run.next:
            run = self._replace(topic, epoch, offset)
        self._append(run, frame)
        self._trim(run)
        self._runs.move_to_end(topic)
        self._evict()

    def fill(self, topic: Topic, epoch: str, first: int, frames: list[Frame]) -> None:
        """Frames read from the history store: offsets first, first + 1, ... in one epoch. Merged with the
        kept run when the two touch or overlap; otherwise the later of the two is kept."""
        if not frames:
            return
        end = first + len(frames)  # the offset after the read
        run = self._runs.get(topic)
        if run is not None and run.epoch == epoch and first <= run.next and end >= run.first:
            if first < run.first:
                # Prepend what comes before the run (the run keeps its own frames where they overlap).
                for frame in reversed(frames[: run.first - first]):
                    run.frames.appendleft(frame)
                    run.size += _cost(frame)
                    self._bytes += _cost(frame)
                run.first = first
            for frame in frames[run.next - first:]:
                self._append(run, frame)
        elif run is None or run.epoch != epoch or end > run.next:
            run = self._replace(topic, epoch, first)
            for frame in frames:
                self._append(run, frame)
        else:
            return
        self._trim(run)
        self._runs.move_to_end(topic)
        self._evict()

    def after(self, topic: Topic, epoch: str, offset: int) -> list[Frame] | None:
        """The frames after `offset` up to the newest the node has, or None when the run does not reach
        back to `offset` + 1 (or is of another epoch, or the node has nothing for the channel)."""
        run = self._runs.get(topic)
        if run is None or run.epoch != epoch or not run.first <= offset + 1 <= run.next:
            return None
        self._runs.move_to_end(topic)
        frames = run.frames
        return [frames[i] for i in range(offset + 1 - run.first, len(frames))]

    def newest(self, topic: Topic) -> tuple[str, int] | None:
        """(epoch, offset) of the newest frame kept for the channel."""
        run = self._runs.get(topic)
        if run is None or not run.frames:
            return None
        return run.epoch, run.next - 1

    def drop(self, topic: Topic) -> None:
        run = self._runs.pop(topic, None)
        if run is not None:
            self._bytes -= run.size

    def _replace(self, topic: Topic, epoch: str, first: int) -> _Run:
        self.drop(topic)
        run = self._runs[topic] = _Run(epoch, first)
        return run

    def _append(self, run: _Run, frame: Frame) -> None:
        run.frames.append(frame)
        cost = _cost(frame)
        run.size += cost
        self._bytes += cost

    def _trim(self, run: _Run) -> None:
        while len(run.frames) > self.per_channel:
            cost = _cost(run.frames.popleft())
            run.first += 1
            run.size -= cost
            self._bytes -= cost

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._runs:
            _, run = self._runs.popitem(last=False)
            self._bytes -= run.size
