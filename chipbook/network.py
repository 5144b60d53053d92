"""Who has to talk to whom: collectives run on simulated ranks, and the α-β cost of the traffic of
training and of inference (chapter "Networking").

Sources of the algorithms and formulas:

* Ring all-reduce (a reduce-scatter then an all-gather, each n−1 steps of one chunk of S/n bytes to
  the next rank) sends 2(n−1)/n·S bytes per rank, the least any all-reduce can send
  [patarasuk2009bandwidth]. Recursive halving then doubling is Rabenseifner's algorithm (log₂ n steps
  each way) as described by [thakur2005optimization], whose α-β costs are used here: a message of m
  bytes costs α + m/B. For rank counts that are not powers of two this module folds the extra ranks
  in with whole buffers, a simpler variant of the paper's half-buffer exchange.
* The bus bandwidth of NVIDIA's nccl-tests, busbw = algbw · 2(n−1)/n with algbw = S/t, is the per-rank
  link speed an all-reduce of S bytes in t seconds implies [nccltests2024performance].
* Megatron-style tensor parallelism splits each MLP and attention block across ranks so that each
  needs one all-reduce of the activations in the forward pass and one in the backward pass: two per
  layer each way [shoeybi2019megatron].
* Training compute is 6·N FLOP per token [kaplan2020scaling] (:func:`chipbook.market.training_flops`).

A simulation returns a :class:`Traffic`: every rank's result and the bytes each rank sent to each
other rank in each round. :func:`round_time` prices a round on a topology (a switch, a ring or a
chain of chips), so the closed forms of :func:`allreduce_time` can be checked against the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chipbook import _checks, market

ALGORITHMS = ("ring", "halving_doubling", "naive")
TOPOLOGIES = ("switch", "ring", "chain")
#: All-reduces per transformer layer with Megatron tensor parallelism: one after attention and one
#: after the MLP in the forward pass, and the same two in the backward pass [shoeybi2019megatron].
TP_ALLREDUCES_PER_LAYER = {"forward": 2, "backward": 2}


@dataclass(frozen=True)
class Traffic:
    """What a simulated communication did: ``result[r]`` is rank r's output, ``rounds[k, i, j]``
    the bytes rank i sent to rank j in round k (rounds run one after the other; the messages of one
    round travel at the same time)."""

    result: np.ndarray
    rounds: np.ndarray

    @property
    def ranks(self) -> int:
        return self.rounds.shape[1]

    @property
    def steps(self) -> int:
        return self.rounds.shape[0]

    @property
    def matrix(self) -> np.ndarray:
        """Bytes sent from rank i (row) to rank j (column), all rounds together."""
        return self.rounds.sum(axis=0)

    @property
    def sent(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    @property
    def received(self) -> np.ndarray:
        return self.matrix.sum(axis=0)


class _Recorder:
    """Collects the rounds of a simulation."""

    def __init__(self, ranks: int):
        self.ranks = ranks
        self.rounds: list[np.ndarray] = []

    def new_round(self) -> np.ndarray:
        self.rounds.append(np.zeros((self.ranks, self.ranks), dtype=np.int64))
        return self.rounds[-1]

    def traffic(self, result: np.ndarray) -> Traffic:
        rounds = np.array(self.rounds) if self.rounds else np.zeros((0, self.ranks, self.ranks), np.int64)
        return Traffic(result=result, rounds=rounds)


def _buffers(buffers) -> np.ndarray:
    arr = np.asarray(buffers)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"buffers must be a 2-D array (ranks × elements) with at least one of each, "
                         f"got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"buffers must hold numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("buffers must be finite")
    return arr.copy()


def ring_allreduce(buffers) -> Traffic:
    """All-reduce (sum) of ``buffers[r]`` over ranks r = 0…n−1 arranged in a ring.

    Each buffer is cut into n chunks. Reduce-scatter: in step s, rank r sends its running sum of
    chunk (r − s) mod n to rank r+1, which adds its own; after n−1 steps rank r holds the full sum of
    chunk (r+1) mod n. All-gather: n−1 more steps pass the finished chunks on round the ring
    [patarasuk2009bandwidth].
    """
    data = _buffers(buffers)
    n = data.shape[0]
    bounds = np.linspace(0, data.shape[1], n + 1).round().astype(int)
    chunk = [slice(bounds[c], bounds[c + 1]) for c in range(n)]
    rec = _Recorder(n)
    item = data.itemsize
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            sent = rec.new_round()
            offset = s if phase == "reduce-scatter" else s - 1
            messages = [(r, (r - offset) % n) for r in range(n)]
            payload = [data[r, chunk[c]].copy() for r, c in messages]  # all sends leave at once
            for (r, c), values in zip(messages, payload, strict=True):
                dest = (r + 1) % n
                if phase == "reduce-scatter":
                    data[dest, chunk[c]] += values
                else:
                    data[dest, chunk[c]] = values
                sent[r, dest] += values.size * item
    return rec.traffic(data)


def halving_doubling_allreduce(buffers) -> Traffic:
    """All-reduce (sum) by recursive halving (a reduce-scatter) then recursive doubling (an
    all-gather): Rabenseifner's algorithm as described by [thakur2005optimization].

    With p the largest power of two ≤ n, the n − p extra ranks first send their whole buffer to a
    partner (ranks 2i and 2i+1 for i < n − p; the even one drops out) and get the result back at the
    end; the paper exchanges half buffers there, whole ones keep this simple. Among the p remaining
    ranks, in the step at distance d = p/2, p/4, …, 1 each rank swaps half of its current segment
    with the rank d away and keeps the sum of the other half; the doubling steps retrace the same
    pairs in reverse, swapping finished segments.
    """
    data = _buffers(buffers)
    n, size = data.shape
    item = data.itemsize
    rec = _Recorder(n)
    p = 1 << (n.bit_length() - 1)
    extra = n - p
    if extra:
        sent = rec.new_round()
        for i in range(extra):
            data[2 * i + 1] += data[2 * i]
            sent[2 * i, 2 * i + 1] += size * item
    active = [2 * i + 1 for i in range(extra)] + list(range(2 * extra, n))  # p ranks, by virtual rank
    segment = {v: (0, size) for v in range(p)}
    history = []
    d = p // 2
    while d >= 1:
        sent = rec.new_round()
        updates = {}
        for v in range(p):
            lo, hi = segment[v]
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if v & d == 0 else ((mid, hi), (lo, mid))
            partner = v ^ d
            updates[v] = keep
            sent[active[v], active[partner]] += (give[1] - give[0]) * item
        incoming = {v: data[active[v ^ d], slice(*updates[v])].copy() for v in range(p)}
        for v in range(p):
            data[active[v], slice(*updates[v])] += incoming[v]
        history.append((d, dict(segment)))
        segment = updates
        d //= 2
    for d, before in reversed(history):
        sent = rec.new_round()
        payload = {v: data[active[v], slice(*segment[v])].copy() for v in range(p)}
        for v in range(p):
            partner = v ^ d
            data[active[partner], slice(*segment[v])] = payload[v]
            sent[active[v], active[partner]] += (segment[v][1] - segment[v][0]) * item
        segment = before
    if extra:
        sent = rec.new_round()
        for i in range(extra):
            data[2 * i] = data[2 * i + 1]
            sent[2 * i + 1, 2 * i] += size * item
    return rec.traffic(data)


def naive_allreduce(buffers, root: int = 0) -> Traffic:
    """All-reduce (sum) through one rank: every other rank sends its whole buffer to ``root``, which
    adds them and sends the sum back to each (a parameter server). Every byte crosses the root's link."""
    data = _buffers(buffers)
    n, size = data.shape
    root = _checks.count("root", root, minimum=0)
    if root >= n:
        raise ValueError(f"root must be a rank in 0…{n - 1}, got {root}")
    item = data.itemsize
    rec = _Recorder(n)
    others = [r for r in range(n) if r != root]
    if others:
        sent = rec.new_round()
        for r in others:
            data[root] += data[r]
            sent[r, root] += size * item
        sent = rec.new_round()
        for r in others:
            data[r] = data[root]
            sent[root, r] += size * item
    return rec.traffic(data)


ALLREDUCE = {"ring": ring_allreduce, "halving_doubling": halving_doubling_allreduce,
             "naive": naive_allreduce}


def allreduce(buffers, algorithm: str) -> Traffic:
    """Run the all-reduce ``algorithm`` (one of :data:`ALGORITHMS`) on ``buffers``."""
    return ALLREDUCE[_checks.choice("algorithm", algorithm, ALGORITHMS)](buffers)


def pipeline_forward(x, weights: Sequence[np.ndarray], stages: int) -> Traffic:
    """Run a stack of ReLU layers ``x ← max(0, x @ W)`` split into ``stages`` contiguous groups,
    one per rank (pipeline parallelism): each stage sends its output activations to the next stage
    only. ``result[s]`` is the activation stage s holds at the end (the output on the last stage)."""
    x = np.asarray(x)
    stages = _checks.count("stages", stages)
    if len(weights) < stages:
        raise ValueError(f"stages must be at most the number of layers ({len(weights)}), got {stages}")
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (batch × width), got shape {x.shape}")
    rec = _Recorder(stages)
    held = [np.zeros_like(x) for _ in range(stages)]
    groups = np.array_split(np.arange(len(weights)), stages)
    for s, layers in enumerate(groups):
        for i in layers:
            x = np.maximum(0, x @ weights[i])
        held[s] = x
        if s < stages - 1:
            rec.new_round()[s, s + 1] += x.nbytes
    return rec.traffic(np.array(held))


def tensor_parallel_mlp(x, w_in, w_out, ranks: int) -> Traffic:
    """One Megatron MLP block, ``max(0, x @ w_in) @ w_out``, on ``ranks`` ranks [shoeybi2019megatron]:
    ``w_in`` split by columns and ``w_out`` by rows, so each rank computes a partial output with no
    communication and one ring all-reduce sums the partials. Every rank ends with the full output."""
    x, w_in, w_out = (np.asarray(a) for a in (x, w_in, w_out))
    ranks = _checks.count("ranks", ranks)
    if w_in.shape[1] < ranks:
        raise ValueError(f"ranks must be at most the hidden width {w_in.shape[1]}, got {ranks}")
    cols = np.array_split(np.arange(w_in.shape[1]), ranks)
    partial = np.array([np.maximum(0, x @ w_in[:, c]) @ w_out[c, :] for c in cols])
    reduced = ring_allreduce(partial.reshape(ranks, -1))
    return Traffic(result=reduced.result.reshape(partial.shape), rounds=reduced.rounds)


# --- pricing a round on a topology --------------------------------------------------------------------


def link_loads(sent: np.ndarray, topology: str) -> np.ndarray:
    """Bytes on the busiest directed link when the messages ``sent[i, j]`` of one round travel
    together over ``topology``, returned per directed link.

    * ``switch``: every rank has one link up to a non-blocking switch and one down (NVSwitch, a
      full-bisection fat tree); a link carries all that its rank sends, or all that it receives.
    * ``ring``: rank r is wired to r ± 1 (mod n), full duplex; a message takes the shorter way round
      (clockwise on a tie) and loads every link on its path.
    * ``chain``: the ring without the link from n−1 back to 0: a line of chips.
    """
    sent = np.asarray(sent)
    topology = _checks.choice("topology", topology, TOPOLOGIES)
    n = sent.shape[0]
    if topology == "switch":
        return np.concatenate([sent.sum(axis=1), sent.sum(axis=0)])
    right = np.zeros(n)  # link r -> r+1
    left = np.zeros(n)   # link r+1 -> r
    for i, j in zip(*np.nonzero(sent), strict=True):
        if topology == "chain":
            path = (right, range(i, j)) if j > i else (left, range(j, i))
        else:
            clockwise = (j - i) % n
            if clockwise <= n - clockwise:
                path = (right, [(i + k) % n for k in range(clockwise)])
            else:
                path = (left, [(j + k) % n for k in range(n - clockwise)])
        links, hops = path
        for h in hops:
            links[h] += sent[i, j]
    return np.concatenate([right, left])


def round_time(sent: np.ndarray, topology: str, bandwidth: float, latency: float) -> float:
    """Seconds for one round: the latency α plus the busiest link's bytes over its ``bandwidth``
    (bytes/s, per direction) [thakur2005optimization]. A round that sends nothing costs nothing."""
    bandwidth = _checks.positive("bandwidth", bandwidth)
    latency = _checks.non_negative("latency", latency)
    loads = link_loads(sent, topology)
    return 0.0 if not loads.any() else latency + float(loads.max()) / bandwidth


def simulated_time(traffic: Traffic, topology: str, bandwidth: float, latency: float) -> float:
    """Seconds for all the rounds of ``traffic``, one after the other, on ``topology``."""
    return sum(round_time(r, topology, bandwidth, latency) for r in traffic.rounds)


def bisection_bytes(sent: np.ndarray) -> float:
    """Bytes that cross between the lower and the upper half of the ranks (both ways together)."""
    sent = np.asarray(sent)
    half = sent.shape[0] // 2
    return float(sent[:half, half:].sum() + sent[half:, :half].sum())


# --- closed forms -------------------------------------------------------------------------------------


def allreduce_time(nbytes: float, ranks: int, bandwidth: float, latency: float,
                   algorithm: str = "ring") -> float:
    """α-β time of an all-reduce of ``nbytes`` bytes over ``ranks`` ranks, each with ``bandwidth``
    bytes/s per direction to a non-blocking switch and a per-message latency ``latency`` seconds
    [thakur2005optimization]:

    * ring: 2(n−1)·α + 2(n−1)/n · S/B;
    * halving_doubling: 2·log₂p·α + 2(p−1)/p · S/B for n = p a power of two; otherwise two more
      steps of α + S/B (the extra ranks' whole buffers, in and out);
    * naive: 2·(α + (n−1)·S/B): the root's link carries every buffer in, then every result out.

    Chunks are taken as exactly S/n (S/p) bytes; the simulations cut whole elements, so they differ
    by at most one element per message.
    """
    nbytes = _checks.non_negative("nbytes", nbytes)
    n = _checks.count("ranks", ranks)
    bandwidth = _checks.positive("bandwidth", bandwidth)
    latency = _checks.non_negative("latency", latency)
    algorithm = _checks.choice("algorithm", algorithm, ALGORITHMS)
    if n == 1 or nbytes == 0:
        return 0.0
    if algorithm == "ring":
        return 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth
    if algorithm == "naive":
        return 2 * (latency + (n - 1) * nbytes / bandwidth)
    p = 1 << (n.bit_length() - 1)
    core = 2 * math.log2(p) * latency + 2 * (p - 1) / p * nbytes / bandwidth
    return core + (0.0 if p == n else 2 * (latency + nbytes / bandwidth))


def algorithm_bandwidth(nbytes: float, seconds: float) -> float:
    """algbw = S / t, in bytes/s [nccltests2024performance]."""
    return _checks.non_negative("nbytes", nbytes) / _checks.positive("seconds", seconds)


def bus_bandwidth(nbytes: float, seconds: float, ranks: int) -> float:
    """busbw = algbw · 2(n−1)/n for an all-reduce [nccltests2024performance]: the per-rank link speed
    the measured time implies, comparable with the hardware's peak whatever the rank count."""
    n = _checks.count("ranks", ranks)
    return algorithm_bandwidth(nbytes, seconds) * 2 * (n - 1) / n


def gradient_bytes(params: float, bytes_per_value: float = 2.0) -> float:
    """Bytes of one full gradient: one value per parameter (2 for BF16, 4 for FP32)."""
    return _checks.positive("params", params) * _checks.positive("bytes_per_value", bytes_per_value)


@dataclass(frozen=True)
class Step:
    """One data-parallel training step: seconds of compute and of gradient all-reduce."""

    compute: float
    allreduce: float

    @property
    def efficiency(self) -> float:
        """Fraction of the step spent computing when communication does not overlap compute."""
        return self.compute / (self.compute + self.allreduce)

    @property
    def efficiency_overlapped(self) -> float:
        """The same when the all-reduce hides perfectly behind compute: compute / max(both)."""
        return self.compute / max(self.compute, self.allreduce)


def data_parallel_step(params: float, tokens_per_step: float, chips: int, peak_flop_s: float,
                       utilisation: float, bandwidth: float, latency: float, *,
                       active_params: float | None = None, bytes_per_value: float = 2.0,
                       algorithm: str = "ring") -> Step:
    """A data-parallel step: 6·N_active·tokens FLOP shared by ``chips`` chips at ``utilisation`` of
    their ``peak_flop_s``, then an all-reduce of the gradient of all ``params`` values
    (:func:`allreduce_time`). ``active_params`` (default ``params``) is the count used per token,
    smaller for a mixture-of-experts model, whose every expert still has a gradient."""
    chips = _checks.count("chips", chips)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    active = params if active_params is None else active_params
    compute = market.training_flops(active, tokens_per_step) / (chips * peak_flop_s * utilisation)
    comm = allreduce_time(gradient_bytes(params, bytes_per_value), chips, bandwidth, latency, algorithm)
    return Step(compute=compute, allreduce=comm)


def pipeline_bytes_per_token(d_model: float, batch: float = 1, bytes_per_value: float = 2.0) -> float:
    """Bytes crossing one pipeline-stage boundary per decoding step: the residual-stream activation
    of each of the ``batch`` sequences, batch · d_model · bytes."""
    return (_checks.positive("d_model", d_model) * _checks.positive("batch", batch)
            * _checks.positive("bytes_per_value", bytes_per_value))


def tensor_parallel_decode_time(layers: int, d_model: float, ranks: int, bandwidth: float,
                                latency: float, *, batch: float = 1, bytes_per_value: float = 2.0,
                                algorithm: str = "ring") -> float:
    """Seconds of communication per decoding step of a ``layers``-layer model with Megatron tensor
    parallelism over ``ranks`` ranks: two all-reduces per layer [shoeybi2019megatron], each of one
    activation per sequence (batch · d_model · bytes)."""
    layers = _checks.count("layers", layers)
    message = pipeline_bytes_per_token(d_model, batch, bytes_per_value)
    per_layer = TP_ALLREDUCES_PER_LAYER["forward"]
    return layers * per_layer * allreduce_time(message, ranks, bandwidth, latency, algorithm)


def bisection_demand(traffic: Traffic) -> float:
    """Bisection bandwidth a collective needs to run every round at the speed of its busiest link,
    in units of one link's bandwidth (per direction): the largest, over rounds, of the bytes that
    cross between the lower and upper halves of the ranks, divided by the busiest link's bytes on a
    non-blocking switch."""
    worst = 0.0
    for sent in traffic.rounds:
        busiest = link_loads(sent, "switch").max()
        if busiest > 0:
            worst = max(worst, bisection_bytes(sent) / busiest)
    return worst


def required_link_bandwidth(tokens_per_chip: float, peak_flop_s: float, utilisation: float,
                            bytes_per_value: float = 2.0) -> float:
    """Per-direction bandwidth (bytes/s) at which a data-parallel ring all-reduce of the gradient
    takes as long as the step's compute, for many chips: 2·N·b/B = 6·N·(T/d)/(P·u) gives
    B* = b·P·u / (3·T/d), whatever the model's size N (sharding the model over m chips divides both
    sides by m). ``tokens_per_chip`` is T/d, the global batch over the data-parallel degree."""
    tokens_per_chip = _checks.positive("tokens_per_chip", tokens_per_chip)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    bytes_per_value = _checks.positive("bytes_per_value", bytes_per_value)
    flop_per_byte = market.TRAINING_FLOP_PER_PARAM / 2  # 6N FLOP a token against 2N values sent a step
    return bytes_per_value * peak_flop_s * utilisation / (flop_per_byte * tokens_per_chip)
