"""Metrics, JSON log lines and trace context of the gateway's calls (gateway/metrics.py, shared/logs.py,
shared/tracing.py) on fakeredis, and the workers' metric helpers (workers/metrics.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.dispatcher import Dispatcher
from shared import tracing
from shared.envelopes import CallJob, CallResult
from shared.logs import current_log_context, log_context, masking, setup_logging
from shared.redis_server import free_port
from tests.unit.test_dispatcher import SPEC, dispatcher, publish, wait_for_job  # noqa: F401 - the fixture
from workers import metrics as worker_metrics

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- metrics -------------------------------------------------------------------------------------------------


async def test_a_call_counts_by_outcome_and_carries_its_traceparent(dispatcher: Dispatcher):  # noqa: F811
    ok_before = sample("gateway_calls_total", function="echo", outcome="ok")
    timed_out_before = sample("gateway_calls_total", function="echo", outcome="timeout")
    durations_before = sample("gateway_call_duration_seconds_count", function="echo")
    task = asyncio.create_task(dispatcher.call("m1", "echo", "{}", SPEC, traceparent=TRACE))
    [rq_job] = await wait_for_job(dispatcher)
    assert CallJob.from_json(rq_job.args[0]).traceparent == TRACE
    assert sample("gateway_pending_calls") >= 1
    await publish(dispatcher, CallResult(call_id="m1", ok=True, content="1"))
    await asyncio.wait_for(task, 1)
    assert sample("gateway_calls_total", function="echo", outcome="ok") == ok_before + 1
    assert sample("gateway_call_duration_seconds_count", function="echo") == durations_before + 1
    await dispatcher.call("m2", "echo", "{}", SPEC.model_copy(update={"timeout": 0.2}))
    assert sample("gateway_calls_total", function="echo", outcome="timeout") == timed_out_before + 1


async def test_a_cancelled_call_counts_as_cancelled(dispatcher: Dispatcher):  # noqa: F811
    before = sample("gateway_calls_total", function="echo", outcome="cancelled")
    task = asyncio.create_task(dispatcher.call("m3", "echo", "{}", SPEC))
    await wait_for_job(dispatcher)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sample("gateway_calls_total", function="echo", outcome="cancelled") == before + 1


def test_old_jobs_without_a_traceparent_still_parse():
    old = '{"call_id":"c","name":"n","arguments":"{}","reply_channel":"r","deadline":1.0}'
    assert CallJob.from_json(old).traceparent == ""


def test_worker_metrics_bound_their_labels_and_serve_on_a_port():
    before = sample("worker_calls_total", function="other", outcome="error")
    worker_metrics.call_ran("no_such_function", {"get_weather"}, "bogus-outcome", 0.1)
    assert sample("worker_calls_total", function="other", outcome="error") == before + 1
    with worker_metrics.busy():
        assert sample("worker_busy_slots") == 1
    assert sample("worker_busy_slots") == 0
    assert worker_metrics.serve(0) is None
    port = free_port()
    served = worker_metrics.serve(port, "127.0.0.1")
    assert served is not None
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    finally:
        served[0].shutdown()
    assert 'worker_calls_total{function="other",outcome="error"}' in text


MULTIPROCESS_CHILD = """
from gateway import metrics
from workers import metrics as worker_metrics
metrics.call_finished("echo", "ok", 0.01)
worker_metrics.call_ran("echo", {"echo"}, "ok", 0.01)
"""


def test_several_processes_sum_into_one_scrape(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """WEB_CONCURRENCY / WORKER_PROCESSES > 1: each process records to PROMETHEUS_MULTIPROC_DIR, any scrape sums."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", MULTIPROCESS_CHILD], env=env, check=True, cwd=str(_root()))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics.exposition()[0].decode()
    assert 'gateway_calls_total{function="echo",outcome="ok"} 2.0' in text
    assert 'worker_calls_total{function="echo",outcome="ok"} 2.0' in text


def _root():
    from tests.support.processes import ROOT

    return ROOT


# --- JSON logs -----------------------------------------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[Callable[[], logging.Logger]]:
    """Call it in the test, where capsys captures: the handler keeps the stream it was given."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def start() -> logging.Logger:
        setup_logging("INFO", "%(message)s", masking(["tok-secret-1234"]), "json")
        return logging.getLogger("test.json")

    yield start
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_json_lines_carry_the_context_extra_fields_and_masked_exceptions(json_lines, capsys):
    logger = json_lines()
    with log_context(session_id="s1", traceparent=TRACE), log_context(call_id="c1", function="f", worker_id=""):
        assert current_log_context() == {"session_id": "s1", "traceparent": TRACE, "call_id": "c1", "function": "f"}
        try:
            raise RuntimeError("refused: redis://:pw-9876@db and tok-secret-1234")
        except RuntimeError:
            logger.exception("call failed", extra={"duration_ms": 12.5, "worker_id": "w-tok-secret-1234"})
    logger.info("after")
    failed, after = lines(capsys)
    assert failed["level"] == "ERROR" and failed["logger"] == "test.json" and failed["message"] == "call failed"
    assert (failed["session_id"], failed["call_id"], failed["function"]) == ("s1", "c1", "f")
    assert failed["duration_ms"] == 12.5 and failed["traceparent"] == TRACE and "ts" in failed
    assert "RuntimeError" in failed["exception"]
    assert "pw-9876" not in json.dumps(failed) and "tok-secret-1234" not in json.dumps(failed)
    assert failed["worker_id"] == "w-***"
    assert "session_id" not in after


async def test_the_log_context_is_per_task_and_per_thread(json_lines, capsys):
    logger = json_lines()

    async def one(call_id: str) -> None:
        with log_context(call_id=call_id):
            await asyncio.sleep(0.01)
            logger.info("done")

    await asyncio.gather(one("a"), one("b"))

    def in_thread() -> None:
        with log_context(worker_id="w9"):
            logger.info("thread")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    found = lines(capsys)
    assert sorted(line["call_id"] for line in found[:2]) == ["a", "b"]
    assert found[2]["worker_id"] == "w9"


def test_library_loggers_lose_their_own_handlers(json_lines, capsys):
    json_lines()
    rq_logger = logging.getLogger("rq.worker")
    rq_logger.addHandler(logging.StreamHandler(sys.stdout))
    setup_logging("INFO", "%(message)s", None, "json")
    rq_logger.info("job done")
    assert rq_logger.handlers == []
    assert lines(capsys)[0]["logger"] == "rq.worker"


def test_the_text_format_is_the_default(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("INFO", "%(levelname)s %(message)s")
    logging.getLogger("t").info("plain")
    root.handlers[:] = handlers
    root.setLevel(level)
    assert capsys.readouterr().err == "INFO plain\n"


# --- trace context -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (TRACE, True),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),  # W3C ids are lowercase
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
        (TRACE + "-extra", False),
        ("", False),
    ],
)
def test_only_valid_traceparents_are_kept(value: str, kept: bool):
    assert tracing.valid_traceparent(value) == (value if kept else "")
    assert tracing.traceparent_of({"TraceParent": value}) == (value if kept else "")


def test_without_an_exporter_spans_are_off_and_the_parent_is_passed_on(monkeypatch: pytest.MonkeyPatch):
    for name in tracing.EXPORTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup_tracing("test") is False
    with tracing.span("call", TRACE) as carried:
        assert carried == TRACE
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_configured() is False
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.exporter_configured() is False
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    assert tracing.exporter_configured() is True


def test_spans_nest_under_the_clients_trace_and_the_job_carries_the_call_span():
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing("test", exporter) is True
    try:
        with tracing.span("session", TRACE) as session_trace, tracing.span("call", session_trace) as call_trace:
            pass
        with tracing.span("run", call_trace):  # what a worker opens from CallJob.traceparent
            pass
    finally:
        tracing.stop_tracing()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    session, call, run = spans["session"], spans["call"], spans["run"]
    trace_id = int(TRACE.split("-")[1], 16)
    assert {s.context.trace_id for s in (session, call, run)} == {trace_id}
    assert session.parent.span_id == int(TRACE.split("-")[2], 16)
    assert call.parent.span_id == session.context.span_id
    assert run.parent.span_id == call.context.span_id
    assert call_trace.split("-")[2] == format(call.context.span_id, "016x")


def test_the_standard_environment_turns_otlp_export_on(monkeypatch: pytest.MonkeyPatch):
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    made: list[InMemorySpanExporter] = []

    def exporter() -> InMemorySpanExporter:
        made.append(InMemorySpanExporter())
        return made[-1]

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", exporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    try:
        assert tracing.setup_tracing("test") is True
    finally:
        tracing.stop_tracing()
    assert len(made) == 1
