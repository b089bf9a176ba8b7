"""Frames lost before the node's callback: publication sequence gaps per publisher, and rates."""
import math

from easi3r_ros.ros.input_monitor import InputMonitor


def info(seq, gid=b"A"):
    return {"publication_sequence_number": seq, "publisher_gid": {"data": gid}}


def test_sequence_gaps_per_publisher_are_losses():
    m = InputMonitor()
    assert m.observe(info(41), 0, 0.0) == 0          # joined late: what came before is not a loss
    assert m.observe(info(42), 1, 0.1) == 0
    assert m.observe(info(45), 2, 0.2) == 2          # 43 and 44 never arrived
    assert m.observe(info(7, b"B"), 3, 0.3) == 0     # a second camera counts on its own
    assert m.observe(info(10, b"B"), 4, 0.4) == 2
    assert m.observe(info(46), 5, 0.5) == 0
    assert (m.lost, m.received) == (4, 6)
    assert m.observe(info(3), 6, 0.6) == 0 and m.out_of_order == 1   # a restarted publisher: no loss
    assert m.observe(info(5), 7, 0.7) == 1
    assert m.snapshot()["input_sequence_numbers"] == "yes" and m.snapshot()["input_publishers"] == 2


def test_rates_from_sequence_numbers_and_from_stamps():
    m = InputMonitor(rate_window_s=10.0)
    for k in range(0, 50, 5):                        # 1 in 5 delivered of a 50 Hz publisher
        m.observe(info(k + 1), k * 20_000_000, k * 0.02)
    received, published = m.rates()
    assert math.isclose(received, 10.0, rel_tol=1e-9) and math.isclose(published, 50.0, rel_tol=1e-9)
    assert m.lost == 36
    # no sequence numbers (0 / None from the middleware): the publisher's rate comes from the stamps
    m = InputMonitor()
    for k in range(10):
        m.observe({"publication_sequence_number": 0}, k * 100_000_000, k * 0.1)
    received, published = m.rates()
    assert math.isclose(published, 10.0) and m.lost == 0 and m.snapshot()["input_sequence_numbers"] == "no"
    assert all(math.isnan(x) for x in InputMonitor().rates())


def test_publisher_table_is_bounded():
    m = InputMonitor(max_publishers=3)
    for g in range(10):
        m.observe(info(1, bytes([g])), g, g * 0.1)
    assert m.snapshot()["input_publishers"] == 3
