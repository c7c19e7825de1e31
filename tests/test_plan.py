import pytest

from jobs.plan import PlanError, make_plan


def test_two_cpus_one_actor_per_core_each_decoding_its_own():
    p = make_plan({"CPU": 2.0})
    assert p.decode_in_actors and p.task_cpus == 0 and p.batch_size == 32
    assert p.actors == 2 and p.actor_cpus == 1.0 and p.threads == 1   # one single-threaded actor per core
    assert p.device == "cpu" and "reading and decoding its own images" in p.describe()
    one = make_plan({"CPU": 2.0}, actors=1)   # --actors 1: that actor takes every CPU
    assert one.actor_cpus == 2.0 and one.threads == 2
    big = make_plan({"CPU": 2.0}, light=False)   # a VLM: one copy, all the threads, batches of 8
    assert (big.actors, big.actor_cpus, big.threads, big.batch_size) == (1, 2.0, 2, 8)


def test_write_tasks_at_once_follow_the_cluster_cpus():
    assert make_plan({"CPU": 2.0}).writers == 2
    assert make_plan({"CPU": 1.0}).writers == 2      # one writes while the next file's rows arrive
    assert make_plan({"CPU": 16.0, "GPU": 1.0}).writers == 16   # a GPU node's output rate needs more


def test_decode_tasks_keep_their_cpus():
    p = make_plan({"CPU": 2.0}, decode="tasks")
    assert not p.decode_in_actors and p.actors == 2 and p.actor_cpus == 0.75 and p.threads == 1
    assert p.actors * p.actor_cpus + p.task_cpus <= 2.0 and p.batch_size == 8
    assert "decode tasks 0.5 CPU each" in p.describe()
    assert make_plan({"CPU": 2.0}, actors=1, decode="tasks").actor_cpus == 1.5
    gpu = make_plan({"CPU": 2.0, "GPU": 1.0}, gpus_per_actor=1)    # GPU plans: decode tasks by default
    assert not gpu.decode_in_actors and gpu.actor_cpus == 1.5
    one_pool = make_plan({"CPU": 8.0, "GPU": 1.0}, gpus_per_actor=1, split=False, decode="actors")
    assert one_pool.decode_in_actors
    with pytest.raises(PlanError, match="--split-stages off"):
        make_plan({"CPU": 8.0, "GPU": 1.0}, gpus_per_actor=1, decode="actors")
    assert not make_plan({"CPU": 2.0}, split=True).decode_in_actors   # split pools are fed by tasks


def test_one_cpu():
    p = make_plan({"CPU": 1.0})
    assert p.actors == 1 and p.actor_cpus == 1.0 and p.decode_in_actors
    p = make_plan({"CPU": 1.0}, decode="tasks")
    assert p.actors == 1 and p.actor_cpus == 0.5 and p.task_cpus == 0.5


def test_sixteen_cpus():
    p = make_plan({"CPU": 16.0})   # a CPU in eight left to the driver, Ray and the writes
    assert p.actors == 14 and p.actor_cpus == 1.0 and p.threads == 1
    p = make_plan({"CPU": 16.0}, decode="tasks")   # a quarter kept for decoding
    assert p.actors == 12 and p.actor_cpus == 1.0


def test_gpu_actors_sized_from_gpus():
    assert make_plan({"CPU": 8.0, "GPU": 1.0}, gpus_per_actor=1).actors == 1
    p = make_plan({"CPU": 64.0, "GPU": 8.0}, gpus_per_actor=1)
    assert p.actors == 8 and p.device == "cuda" and p.batch_size == 16
    assert make_plan({"CPU": 8.0, "GPU": 1.0}, gpus_per_actor=0.25).actors == 4


def test_refuses_gpu_actors_without_gpus():
    with pytest.raises(PlanError, match="no GPUs"):
        make_plan({"CPU": 4.0}, gpus_per_actor=1)


def test_refuses_plan_that_starves_reads():
    with pytest.raises(PlanError, match="stall"):
        make_plan({"CPU": 2.0}, actors=2, actor_cpus=1.0, decode="tasks")
    assert make_plan({"CPU": 2.0}, actors=2, actor_cpus=1.0).actors == 2   # actors that decode need no reserve
    with pytest.raises(PlanError, match="wait forever"):
        make_plan({"CPU": 2.0}, actors=3, actor_cpus=1.0)


def test_overrides_are_respected():
    p = make_plan({"CPU": 8.0}, actors=3, actor_cpus=2.0, batch_size=4)
    assert (p.actors, p.actor_cpus, p.batch_size, p.threads) == (3, 2.0, 4, 2)


def test_gpu_plans_split_scan_and_zoom_pools_by_default():
    p = make_plan({"CPU": 16, "GPU": 1}, gpus_per_actor=1)
    assert p.split and p.actors == 1 and (p.pool_gpus, p.pool_cpus) == (0.5, 0.5)
    assert "1 scan + 1 zoom actor(s) x (0.5 CPU, 0.5 GPU)" in p.describe()
    p = make_plan({"CPU": 64, "GPU": 8}, gpus_per_actor=0.5)   # two model copies per GPU and stage
    assert p.actors == 16 and p.pool_gpus == 0.25 and p.device == "cuda"
    assert not make_plan({"CPU": 16, "GPU": 1}, gpus_per_actor=1, split=False).split
    cpu = make_plan({"CPU": 2})
    assert not cpu.split and make_plan({"CPU": 2}, split=True).pool_cpus == 0.375



def test_actors_fit_on_a_node():
    """Two 1-CPU nodes: 2 CPUs in all, but no actor may ask for 1.5 of them (it would wait forever)."""
    assert make_plan({"CPU": 2.0}, node_cpus=1.0, actors=1).actor_cpus == 1.0   # one per node at most
    p = make_plan({"CPU": 2.0}, node_cpus=1.0, decode="tasks")
    assert p.actor_cpus <= 0.75 and p.actors >= 1
    # and whatever node Ray puts each actor on, one node keeps room for a decode task
    per_node = int(1.0 // p.actor_cpus)
    assert p.actors < 2 * per_node and 1.0 - (p.actors - per_node) * p.actor_cpus >= p.task_cpus
    assert make_plan({"CPU": 2.0}).actors == 2  # one 2-CPU node: as before
    with pytest.raises(PlanError, match="fits on no node"):
        make_plan({"CPU": 16.0}, node_cpus=4.0, actor_cpus=6.0)


def test_small_jobs_are_cut_so_every_actor_gets_work():
    from jobs.pipeline import MAX_PLAN_BLOCKS, read_split
    big = make_plan({"CPU": 16.0})                     # 12 model actors
    per_task, per_block = read_split(96, big)
    assert -(-96 // per_block) >= big.actors          # a block for every actor
    assert per_task <= per_block                       # a decode task's output is at most a block
    # Large jobs keep 16 images per decode task, and the driver's block count stays capped.
    per_task, per_block = read_split(1_000_000, big)
    assert per_task == 16 and -(-1_000_000 // per_block) <= min(MAX_PLAN_BLOCKS, 200)
    # One actor on two CPUs: 48 images in three blocks of 16, as before.
    assert read_split(48, make_plan({"CPU": 2.0}, actors=1, decode="tasks")) == (16, 16)
    assert read_split(1, big) == (1, 1)
