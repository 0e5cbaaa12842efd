"""The ``[network]`` section: building, recording, grouping, and its error messages."""

from __future__ import annotations

import pytest

from decent.comm.network import NetworkCommunicator
from decent.config import ConfigError, build, loads_config
from decent.run import run_config, train_experiment
from decent.run.single import replica_key

BASE = """
study = "net"
rounds = 30
eval_every = 10

[topology]
kind = "ring"
num_nodes = 8

[algorithm]
kind = "dsgd"
lr = 0.05

[task]
kind = "least_squares"
dim = 4
heterogeneity = 1.0
"""

NETWORK = """
[network]
latency = 0.1
bandwidth = 320.0

[network.compute]
kind = "straggler"
p = 0.2
slowdown = 4.0

[network.faults]
drop = 0.25
crashes = {"3" = 12}
"""


def lines(err: ConfigError) -> list[str]:
    return str(err).splitlines()[1:]


def test_a_network_section_builds_the_network_and_records_time_and_faults(tmp_path) -> None:
    from decent.results import Store

    cfg = loads_config(BASE + NETWORK)
    exp = build(cfg)
    assert isinstance(exp.comm, NetworkCommunicator)
    assert exp.comm.faults.crashes == {3: 12} and exp.comm.link.bandwidth == 320.0
    store = Store(tmp_path / "s.sqlite")
    outcome = run_config(cfg, store)
    assert outcome.status == "finished"
    final = outcome.final
    # 30 rounds: at least one second of compute each, plus latency and 32-byte messages
    assert final["time/sim"] >= 30 * (1 + 0.1 + 32 / 320.0)
    assert final["faults/alive_nodes"] == 7 and final["faults/dropped"] > 0
    assert final["faults/crashed/node3/round"] == 12
    rows = store.records(run_ids=[outcome.run_id], metrics=["time/sim"]).sort_values("round")
    assert list(rows["round"]) == [0, 10, 20, 30]
    assert list(rows["value"]) == sorted(rows["value"]) and rows["value"].iloc[0] == 0.0


def test_without_a_network_section_nothing_changes_and_old_run_ids_stay() -> None:
    cfg = loads_config(BASE)
    assert "network" not in cfg.run_dict()
    assert not isinstance(build(cfg).comm, NetworkCommunicator)


def test_the_same_config_reproduces_its_faults_and_the_seed_changes_them() -> None:
    a = train_experiment(build(loads_config(BASE + NETWORK)))
    b = train_experiment(build(loads_config(BASE + NETWORK)))
    c = train_experiment(build(loads_config("seed = 1\n" + BASE + NETWORK)))
    assert a.output is not None and b.output is not None
    assert a.output.equal(b.output)
    assert a.final["faults/dropped"] == b.final["faults/dropped"]
    assert a.final["faults/dropped"] != c.final["faults/dropped"]


def test_network_runs_are_never_grouped_into_one_replica_batch() -> None:
    one = loads_config(BASE + NETWORK)
    other = loads_config("seed = 1\n" + BASE + NETWORK)
    assert replica_key(one) != replica_key(other)
    plain = loads_config(BASE), loads_config("seed = 1\n" + BASE)
    assert replica_key(plain[0]) == replica_key(plain[1])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("drop = 0.25", "drop = 1.5"), "network.faults.drop: 1.5 -> must be <= 1"),
        (('crashes = {"3" = 12}', 'crashes = {"30" = 12}'), "network.faults.crashes: 30"),
        (
            ('crashes = {"3" = 12}', 'crashes = {"3" = 0}'),
            "network.faults.crashes: {3 = 0} -> must be >= 1",
        ),
        (('crashes = {"3" = 12}', 'joins = {"8" = 5}'), "network.faults.joins: 8"),
        (('crashes = {"3" = 12}', 'leaves = {"2" = 0}'), "network.faults.leaves: {2 = 0}"),
        (
            ('crashes = {"3" = 12}', 'crashes = {"3" = 12}\njoins = {"3" = 20}'),
            "a crashed node never comes back",
        ),
        (("latency = 0.1", "latency = -1.0"), "network.latency: -1.0 -> must be >= 0"),
        (('kind = "straggler"', 'kind = "gamma"'), "network.compute.kind"),
        (("p = 0.2", "p = 2.0"), "network.compute.p: 2.0 -> must be <= 1"),
        (
            ('crashes = {"3" = 12}', "link_fail = 0.5\nlink_recover = 0.0"),
            "faults.link_recover must be > 0",
        ),
    ],
)
def test_bad_network_input_is_one_line_naming_the_field(edit, expected) -> None:
    old, new = edit
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE + NETWORK.replace(old, new)))
    assert any(expected in line for line in lines(err.value)), lines(err.value)


def test_a_schedule_that_crashes_every_node_is_refused_before_training() -> None:
    every = ", ".join(f'"{i}" = {i + 1}' for i in range(8))
    with pytest.raises(ConfigError) as err:
        build(
            loads_config(BASE + NETWORK.replace('crashes = {"3" = 12}', f"crashes = {{{every}}}"))
        )
    assert "at least one node must stay alive" in str(err.value)


def test_chebyshev_gossip_runs_on_a_simulated_network() -> None:
    """Each of the K inner mixes is one gossip round on the network's clock: without faults
    the iterates are the simulator's accelerated gossip bit for bit, and the clock charges
    K latencies per round; with faults it trains and counts its drops."""
    clean = "\n[network]\nlatency = 0.1\n"
    on_net = train_experiment(build(loads_config("chebyshev_steps = 3\n" + BASE + clean)))
    in_sim = train_experiment(build(loads_config("chebyshev_steps = 3\n" + BASE)))
    last, ref = on_net.records[-1], in_sim.records[-1]
    assert last["eval/loss@mean"] == ref["eval/loss@mean"]
    assert last["comm/rounds"] == ref["comm/rounds"] == 30 * 3
    assert last["time/sim"] == pytest.approx(30 * (1.0 + 3 * 0.1), rel=1e-12)
    faulty = train_experiment(build(loads_config("chebyshev_steps = 3\n" + BASE + NETWORK)))
    assert faulty.status == "finished" and faulty.records[-1]["faults/dropped"] > 0


def test_chebyshev_refuses_stale_network_gossip_and_pairwise_averaging() -> None:
    delayed = "\n[network]\n[network.delays]\nmax_delay = 2\n"
    with pytest.raises(ConfigError) as err:
        build(loads_config("chebyshev_steps = 2\n" + BASE + delayed))
    assert "chebyshev_steps" in str(err.value) and "exactly W_t @ x" in str(err.value)
    async_ = BASE.replace('kind = "dsgd"', 'kind = "ad_psgd"') + clean_network()
    with pytest.raises(ConfigError) as err:
        build(loads_config("chebyshev_steps = 2\n" + async_))
    assert "chebyshev_steps" in str(err.value) and "never mixes with W_t" in str(err.value)


def clean_network() -> str:
    return "\n[network]\nlatency = 0.1\n"


def test_bounded_delays_from_a_config_record_their_staleness() -> None:
    delayed = (
        BASE
        + NETWORK.replace('drop = 0.25\ncrashes = {"3" = 12}', "")
        + ('\n[network.delays]\nmax_delay = 2\nkind = "clock"\n')
    )
    result = train_experiment(build(loads_config(delayed)))
    assert 0 < result.final["delay/mean"] <= result.final["delay/max"] <= 2
    with pytest.raises(ConfigError) as err:
        build(loads_config(delayed.replace("max_delay = 2", "max_delay = -1")))
    assert any("network.delays.max_delay: -1 -> must be >= 0" in line for line in lines(err.value))
    # delays with drops and a crash: runs, and records both
    both = train_experiment(
        build(loads_config(BASE + NETWORK + "\n[network.delays]\nmax_delay = 2\n"))
    )
    assert both.status == "finished" and both.final["faults/dropped"] > 0
    assert both.final["faults/alive_nodes"] == 7 and both.final["delay/max"] <= 2
    timevarying = BASE.replace('kind = "ring"', 'kind = "one_peer_exponential"')
    with pytest.raises(ConfigError) as err:
        build(loads_config(timevarying + NETWORK + "\n[network.delays]\nmax_delay = 2\n"))
    assert "needs a static topology" in str(err.value)


def test_the_report_plots_against_simulated_time(tmp_path) -> None:
    from decent.report import write_report
    from decent.results import Store

    with Store(tmp_path / "s.sqlite") as store:
        for seed in (0, 1):
            for kind in ("dsgd", "minibatch_sgd"):
                text = BASE.replace('kind = "dsgd"', f'kind = "{kind}"')
                assert run_config(loads_config(f"seed = {seed}\n" + text + NETWORK), store)
        html = write_report(store, "net", tmp_path / "rep").read_text(encoding="utf-8")
    # the objective against rounds, and against simulated time (a caption per figure)
    assert "against simulated time (s)" in html
    assert '<th title="time/sim">simulated time (s)</th>' in html


def test_nodes_leave_and_join_from_a_config(tmp_path) -> None:
    from decent.results import Store

    churn = 'leaves = {"3" = 8}\njoins = {"3" = 16, "6" = 4}'
    with Store(tmp_path / "s.sqlite") as store:
        outcome = run_config(
            loads_config(BASE + NETWORK.replace('crashes = {"3" = 12}', churn)), store
        )
    assert outcome.status == "finished"
    final = outcome.final
    assert final["faults/alive_nodes"] == 8
    assert final["faults/left/node3/round"] == 8 and final["faults/joined/node3/round"] == 16
    assert final["faults/joined/node6/round"] == 4


def test_ad_psgd_needs_a_network_section_and_runs_with_one(tmp_path) -> None:
    from decent.results import Store

    text = BASE.replace('kind = "dsgd"', 'kind = "ad_psgd"')
    with pytest.raises(ConfigError) as err:
        build(loads_config(text))
    assert any("algorithm.kind" in line and "[network]" in line for line in lines(err.value))
    with Store(tmp_path / "s.sqlite") as store:
        outcome = run_config(loads_config(text + NETWORK), store)
    assert outcome.status == "finished"
    assert 0 < outcome.final["grad_evals"] < 30 * 8  # the gradients used, not t * M
    delayed = text + NETWORK.replace('drop = 0.25\ncrashes = {"3" = 12}', "")
    with pytest.raises(ConfigError) as err:
        build(loads_config(delayed + "\n[network.delays]\nmax_delay = 2\n"))
    assert any("network.delays.max_delay" in line for line in lines(err.value))
