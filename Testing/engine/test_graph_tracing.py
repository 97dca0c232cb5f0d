"""Preparing a network (which traces it with ``torch.fx``) while another thread runs a
network: in Slicer each module panel predicts in a worker thread of the same process."""

import threading

import torch
from torch import nn

from oncoseg.graph_tracing import ThreadConfinedTracer
from oncoseg.network_inference import prepare_for_inference
from oncoseg.staging.network import StagingNet


def test_another_threads_forward_passes_run_untouched_while_a_network_is_traced():
    torch.manual_seed(0)
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)).eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.inference_mode():
        expected = other(x)
    stop, failures, calls = threading.Event(), [], [0]

    def run_other() -> None:
        while not stop.is_set():
            try:
                with torch.inference_mode():
                    if not torch.equal(other(x), expected):
                        failures.append("a different result")
            except Exception as error:  # the tracer's NameError before the fix
                failures.append(repr(error))
            calls[0] += 1

    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        for _ in range(3):  # fresh networks: each is traced (folding and fusion)
            prepared = prepare_for_inference(StagingNet(filters=8).eval(), (6, 48, 48))
    finally:
        stop.set()
        thread.join()
    assert calls[0] > 20  # the other thread ran while the networks were traced
    assert failures == []
    assert isinstance(prepared.eager, torch.fx.GraphModule)  # and the tracing still traced


def test_the_tracer_records_in_its_own_thread_what_symbolic_trace_records():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    ours = [(n.op, str(n.target)) for n in ThreadConfinedTracer().trace(net).nodes]
    theirs = [(n.op, str(n.target)) for n in torch.fx.symbolic_trace(net).graph.nodes]
    assert ours == theirs


def test_warning_filters_are_saved_and_restored_by_one_thread_at_a_time():
    """Two threads in ``warnings.catch_warnings`` at once can restore each other's filters
    (e.g. leave "ignore" in place for the whole session): OncoSeg's own uses wait in turn."""
    import warnings

    from oncoseg.graph_tracing import warnings_caught

    before = list(warnings.filters)
    first_inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with warnings_caught():
            warnings.simplefilter("ignore")
            order.append("first in")
            first_inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        first_inside.wait(5)
        with warnings_caught():
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_inside.wait(5)
    threads[1].join(0.2)  # the second thread waits while the first holds the filters
    release.set()
    for thread in threads:
        thread.join()
    assert order == ["first in", "first out", "second in"]
    assert warnings.filters == before
