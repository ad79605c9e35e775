"""Leader election's rules (``slotfleet/operator/leader.py``) on a fake monotonic clock:
when a candidate may take the Lease, what it writes, and when a leader must give up.

The API side (reads, writes with ``resourceVersion``, two candidates racing, operator
processes killed mid-burst) runs on the real control plane in
``tests/kube/test_operator_leader.py``.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest

from slotfleet.cli.main import build_parser
from slotfleet.cli.operator_cmd import election_options
from slotfleet.models import InvalidSettingsError
from slotfleet.operator.election import ElectionOptions, StandbyProbe, address_of
from slotfleet.operator.leader import (
    Candidate,
    ElectionTimings,
    LeaseRecord,
    Tenure,
    Verdict,
    micro_time,
)

TIMINGS = ElectionTimings(lease_duration=15)
WALL = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def held_by(holder: str, renew: datetime, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, 15, micro_time(WALL), micro_time(renew), transitions)


def test_no_lease_is_created_holding_it_with_no_transition() -> None:
    me = Candidate("op-a_1", TIMINGS)
    me.observe(None, "", now=100.0)
    assert me.verdict(100.0) is Verdict.CREATE
    claim = me.claim(WALL)
    assert claim == LeaseRecord("op-a_1", 15, micro_time(WALL), micro_time(WALL), 0)
    assert claim.to_spec() == {
        "holderIdentity": "op-a_1",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 0,
        "acquireTime": "2026-11-30T21:00:00.000000Z",
        "renewTime": "2026-11-30T21:00:00.000000Z",
    }


def test_another_holders_lease_expires_a_duration_after_this_process_saw_it_change() -> None:
    me = Candidate("op-b_2", TIMINGS)
    record = held_by("op-a_1", WALL)
    me.observe(record, "10", now=100.0)
    assert me.verdict(100.0) is Verdict.WAIT
    # the same record read again later does not restart the clock
    me.observe(record, "10", now=110.0)
    assert me.verdict(114.9) is Verdict.WAIT
    assert me.expires_in(114.9) == pytest.approx(0.1)
    assert me.verdict(115.0) is Verdict.TAKE
    claim = me.claim(WALL + timedelta(seconds=15))
    assert (claim.holder, claim.transitions) == ("op-b_2", 4)
    assert claim.acquire_time == claim.renew_time == "2026-11-30T21:00:15.000000Z"


def test_a_renewing_holder_never_expires_however_wrong_its_wall_clock() -> None:
    # the holder's clock is a day behind: its renewTime looks ancient, yet it renews
    me = Candidate("op-b_2", TIMINGS)
    behind = WALL - timedelta(days=1)
    for step in range(10):
        now = 100.0 + step * 5
        me.observe(held_by("op-a_1", behind + timedelta(seconds=step * 5)), str(step), now)
        assert me.verdict(now + 4.9) is Verdict.WAIT
    # it stops renewing: a full duration after the last change seen here, not before
    assert me.verdict(145.0 + 14.9) is Verdict.WAIT
    assert me.verdict(145.0 + 15.0) is Verdict.TAKE


def test_a_holder_whose_clock_runs_ahead_is_not_expired_early_either() -> None:
    me = Candidate("op-b_2", TIMINGS)
    me.observe(held_by("op-a_1", WALL + timedelta(hours=3)), "7", now=100.0)
    assert me.verdict(114.0) is Verdict.WAIT


def test_a_released_lease_is_free_at_once() -> None:
    me = Candidate("op-b_2", TIMINGS)
    released = LeaseRecord("", 1, micro_time(WALL), micro_time(WALL), 5)
    me.observe(released, "11", now=100.0)
    assert me.verdict(100.0) is Verdict.TAKE
    assert me.expires_in(100.0) == 0
    assert me.claim(WALL).transitions == 6


def test_a_renewal_keeps_the_acquire_time_and_the_transition_count() -> None:
    me = Candidate("op-a_1", TIMINGS)
    mine = held_by("op-a_1", WALL, transitions=2)
    me.observe(mine, "12", now=100.0)
    assert me.verdict(100.0) is Verdict.RENEW
    later = WALL + timedelta(seconds=5)
    renewed = me.claim(later)
    assert renewed.acquire_time == mine.acquire_time
    assert renewed.renew_time == micro_time(later)
    assert renewed.transitions == 2


def test_a_restarted_container_is_a_new_candidate() -> None:
    # same pod name, new random suffix: it waits out its predecessor's lease
    me = Candidate("op-a_2", TIMINGS)
    me.observe(held_by("op-a_1", WALL), "13", now=100.0)
    assert me.verdict(100.0) is Verdict.WAIT


def test_release_hands_back_only_a_lease_this_process_holds() -> None:
    me = Candidate("op-a_1", TIMINGS)
    me.observe(held_by("op-b_2", WALL), "14", now=100.0)
    assert me.release(WALL) is None
    me.observe(held_by("op-a_1", WALL, transitions=4), "15", now=101.0)
    released = me.release(WALL + timedelta(seconds=1))
    assert released is not None
    assert (released.holder, released.duration, released.transitions) == ("", 1, 4)


def test_a_leader_gives_up_before_anyone_may_take_over() -> None:
    tenure = Tenure(TIMINGS, renewed_at=200.0)
    assert TIMINGS.retry_period == 5
    assert TIMINGS.renew_deadline == 10
    assert not tenure.lost(209.9)
    assert tenure.lost(210.0)
    # a follower that saw the renewal at once may take over at 215: five seconds to stop
    assert tenure.hard_stop_in(210.0) == pytest.approx(5.0)
    tenure.renewed(205.0)
    assert tenure.remaining(205.0) == pytest.approx(10.0)
    tenure.renewed(204.0)  # a late answer to an older renewal never moves it back
    assert tenure.renewed_at == 205.0


def test_a_lease_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 s"):
        ElectionTimings(lease_duration=0.5)


def test_a_record_round_trips_through_the_lease_spec() -> None:
    record = held_by("op-a_1", WALL, transitions=9)
    assert LeaseRecord.from_spec(record.to_spec()) == record
    assert LeaseRecord.from_spec(None) == LeaseRecord("", 0)


# ------------------------------------------------------------------ the command line


def election_args(*argv: str, pod_namespace: str = "") -> ElectionOptions | None:
    args = build_parser(["operator", *argv]).parse_args(["operator", *argv])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POD_NAMESPACE", pod_namespace)
        env.setenv("POD_NAME", "op-7f9c")
        return election_options(args)


def test_leader_election_is_off_unless_asked() -> None:
    assert election_args() is None


def test_the_lease_lives_in_the_pods_namespace_by_default() -> None:
    options = election_args("--leader-elect", pod_namespace="ops")
    assert options is not None
    assert (options.namespace, options.name) == ("ops", "slotfleet-operator")
    assert options.timings == ElectionTimings(15)
    pod, _, suffix = options.identity.rpartition("_")
    assert pod == "op-7f9c"
    assert len(suffix) == 8
    # then the one watched namespace, then --lease-namespace above both
    options = election_args("--leader-elect", "--namespace", "team-a")
    assert options is not None
    assert options.namespace == "team-a"
    options = election_args(
        "--leader-elect",
        "--lease-namespace",
        "ctl",
        "--lease-name",
        "mine",
        "--lease-duration",
        "6",
        pod_namespace="ops",
    )
    assert options is not None
    assert (options.namespace, options.name, options.timings.lease_duration) == ("ctl", "mine", 6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--leader-elect",), "--leader-elect needs --lease-namespace"),
        (("--leader-elect", "--namespace", "a", "--namespace", "b"), "needs --lease-namespace"),
        (("--leader-elect", "--peering", "p", "--lease-namespace", "x"), "drop --peering"),
    ],
)
def test_election_settings_that_cannot_work_are_refused_in_one_line(
    argv: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidSettingsError, match=message):
        election_args(*argv)


def test_a_lease_under_a_second_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser(["operator"]).parse_args(["operator", "--lease-duration", "0.5"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------ the follower's probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_follower_answers_its_probe_and_scrapes_and_frees_the_ports_for_the_leader() -> None:
    async def get(port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        return answer

    async def scenario(liveness: int, metrics: int) -> list[bytes]:
        probe = await StandbyProbe.start(
            [address_of(f"http://127.0.0.1:{liveness}/healthz"), ("127.0.0.1", metrics)]
        )
        answers = [await get(liveness, "/healthz"), await get(metrics, "/metrics")]
        await probe.stop()
        # the leader's own servers bind the same addresses as soon as the probe is gone
        # (an OSError "address already in use" here would fail the test)
        for port in (liveness, metrics):
            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
            server.close()
            await server.wait_closed()
        return answers

    for answer in asyncio.run(scenario(free_port(), free_port())):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: text/plain; version=0.0.4" in head
        # a comment line: valid Prometheus text, no samples (the leader exports the gauges)
        assert body == b"# standby: this replica does not hold the leader Lease\n"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://10.0.0.7:8080/healthz", ("10.0.0.7", 8080)),
        ("http://[fd00::7]:8080/healthz", ("fd00::7", 8080)),
        ("http://0.0.0.0/healthz", ("0.0.0.0", 80)),
    ],
)
def test_the_liveness_address_of_a_url(url: str, address: tuple[str, int]) -> None:
    assert address_of(url) == address
