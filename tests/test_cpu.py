"""tui.cpu: thread bounds and the gate that makes engines take turns on the cores."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tui import cpu
from tui.engines import protocol as p
from tui.engines.host import EngineHost

CPUS = len(os.sched_getaffinity(0))


def test_bound_threads_stays_within_the_cpus() -> None:
    assert cpu.available_cpus() == CPUS
    assert cpu.bound_threads(100_000) == CPUS
    assert cpu.bound_threads(1) == 1
    assert cpu.bound_threads(0) == cpu.default_threads()
    assert cpu.bound_threads(-3) == cpu.default_threads()
    assert 1 <= cpu.default_threads() <= CPUS


def test_gate_queues_what_does_not_fit_first_come_first_served() -> None:
    gate = cpu.CpuGate(capacity=4)
    image = gate.request("image", 4)
    assert image.granted  # alone: runs at once
    chat = gate.request("chat", 2)
    speech = gate.request("speech", 1)
    assert not chat.granted and not speech.granted
    assert gate.blockers(chat) == ["image"]
    assert gate.blockers(speech) == ["image", "chat"]  # behind the running and the queued
    assert not gate.wait(chat, 0.05)

    gate.release(image)
    # Both fit together now (2 + 1 <= 4), in order.
    assert chat.granted and speech.granted
    assert gate.running() == ["chat", "speech"] and gate.queued() == []
    assert gate.blockers(chat) == []


def test_gate_runs_side_by_side_when_the_cores_suffice() -> None:
    gate = cpu.CpuGate(capacity=8)
    first, second = gate.request("chat", 4), gate.request("image", 4)
    assert first.granted and second.granted
    third = gate.request("speech", 1)
    assert not third.granted


def test_gate_never_lets_a_small_request_overtake_a_queued_big_one() -> None:
    gate = cpu.CpuGate(capacity=2)
    small = gate.request("speech", 1)
    big = gate.request("image", 2)
    later = gate.request("chat", 1)  # would fit beside `small`, but `big` is first
    assert small.granted and not big.granted and not later.granted
    gate.release(small)
    assert big.granted and not later.granted
    gate.release(big)
    assert later.granted


def test_gate_wakes_a_waiting_thread_and_a_withdrawn_ticket_frees_its_place() -> None:
    gate = cpu.CpuGate(capacity=1)
    held = gate.request("image", 1)
    waiting = gate.request("chat", 1)
    withdrawn = gate.request("speech", 1)
    gate.release(withdrawn)  # left the queue before its turn
    assert gate.queued() == ["chat"]
    woke: list[float] = []
    thread = threading.Thread(target=lambda: woke.append(gate.wait(waiting, 5.0)))
    thread.start()
    time.sleep(0.1)
    assert not woke
    gate.release(held)
    thread.join(2.0)
    assert woke == [True]


def test_requests_claim_at_most_the_capacity() -> None:
    gate = cpu.CpuGate(capacity=2)
    ticket = gate.request("chat", 64)
    assert ticket.threads == 2


def test_describe_wait() -> None:
    assert cpu.describe_wait(["image"]).startswith("Waiting for the image engine to finish")
    assert "chat and speech engines" in cpu.describe_wait(["chat", "speech"])


# --- the host: a queued request waits, is shown, can be cancelled ----------------------


def _host_events(host: EngineHost, request: p.ChatRequest, out: list) -> threading.Thread:
    def run() -> None:
        for event in host.submit(request):
            out.append(event)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_host_request_waits_behind_another_engine_and_can_be_cancelled(tmp_path: Path) -> None:
    gate = cpu.CpuGate(capacity=2)
    image = gate.request("image", 2)  # another engine is generating
    host = EngineHost("chat", log_dir=tmp_path)
    host.cpu_gate = gate
    events: list = []
    request = p.ChatRequest(model_path=str(tmp_path / "none.gguf"), messages=[], n_threads=2)
    thread = _host_events(host, request, events)
    try:
        _wait_for(lambda: events)
        assert isinstance(events[0], p.WaitingForCpu) and events[0].behind == ["image"]
        assert host.waiting_for == ["image"] and host.busy
        time.sleep(0.2)
        assert len(events) == 1 and not host.alive  # nothing started meanwhile
        host.cancel()
        thread.join(5.0)
        assert not thread.is_alive()
        assert isinstance(events[-1], p.GenerationFinished)
        assert events[-1].reason == "cancelled"
        assert not host.alive and not host.busy and host.waiting_for == []
        assert gate.queued() == []  # the cancelled request left the queue
    finally:
        gate.release(image)
        host.shutdown()


def test_host_request_starts_when_the_other_engine_finishes(tmp_path: Path) -> None:
    gate = cpu.CpuGate(capacity=2)
    image = gate.request("image", 2)
    host = EngineHost("chat", log_dir=tmp_path)
    host.cpu_gate = gate
    events: list = []
    missing = tmp_path / "missing.gguf"
    request = p.ChatRequest(model_path=str(missing), messages=[], n_threads=100_000)
    thread = _host_events(host, request, events)
    try:
        _wait_for(lambda: events)
        assert isinstance(events[0], p.WaitingForCpu)
        assert request.n_threads == CPUS  # bounded before it was queued
        gate.release(image)
        thread.join(60.0)
        kinds = [type(e) for e in events]
        assert kinds[:2] == [p.WaitingForCpu, p.CpuGranted]
        # It then really ran in the engine, which reported the missing model.
        assert isinstance(events[-1], p.EngineFailed) and events[-1].kind == "model"
        assert str(missing) in events[-1].message
        assert gate.running() == [] and gate.queued() == []
    finally:
        gate.release(image)
        host.shutdown()


async def test_tui_says_when_the_threads_setting_is_beyond_the_cpus(app_dirs) -> None:
    from tui.app import TriptychApp
    from tui.config import Settings
    from tui.store import Store

    settings = Settings()
    settings.threads = 100_000
    app = TriptychApp(settings=settings, store=Store())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any(
            f"threads = 100000 in the settings is more than the {CPUS} CPUs" in m for m in messages
        ), messages
        # Every engine host shares the one gate.
        assert app.chat_host.cpu_gate is app.image_host.cpu_gate is app.speech_host.cpu_gate
