"""`vlmr bench` pieces that are cheap enough for the fast suite (the full run is `make bench`)."""

from vlmr.bench.run import bench_cache, goal_lines


def test_frame_cache_bench_gives_identical_rewards_and_hits():
    out = bench_cache(steps=64, num_envs=4)
    assert out["identical_rewards"] is True
    assert 0.0 < out["hit_rate"] < 1.0 and out["frames"] == 64


def test_goal_lines_report_met_and_missed_goals():
    results = {"reward": [{"arch": "vlmr-tiny", "rows": [{"batch_size": 64, "batched_over_limit": 0.95,
                                                          "batched_over_naive": 2.0}]}],
               "rl": {"ratio": {"vlm": 0.1, "vlm_cache": 0.6}}}
    lines = "\n".join(goal_lines(results))
    assert "batched/limit at batch 64: 0.95 (goal >= 0.9) met" in lines
    assert "batched/naive at batch 64: 2.00 (goal >= 2.5) NOT met" in lines
    assert "ground truth: 0.10 (goal >= 0.5) NOT met" in lines


def test_flop_count_matches_a_hand_count_and_the_table_has_it():
    import torch
    from torch import nn

    from vlmr.bench.reward import image_flops_per_frame, markdown, reward_throughput

    class Linear(nn.Module):  # encode_image: a 3*8*8 -> 5 matmul, so 2 * 192 * 5 FLOPs per frame
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(192, 5, bias=False)

        def encode_image(self, x):
            return self.fc(x.flatten(1))

    assert image_flops_per_frame(Linear(), 8) == 2 * 192 * 5
    out = reward_throughput("vlmr-tiny", batch_sizes=(2,), min_seconds=0.01, naive_frames=1)
    assert out["image_gflops"] > 0 and out["rows"][0]["fraction_of_peak"] is None  # CPU: no bf16 peak
    assert "GFLOP/frame" in markdown([out]) and torch.get_num_threads() >= 1


def test_integrity_bench_measures_both_arms():
    from vlmr.bench.integrity import bench_integrity, markdown

    out = bench_integrity(frames=60, min_seconds=0.01)
    assert out["read_fps"] > 0 and out["read_unchecked_fps"] > 0 and 0 < out["collection_overhead"] < 1
    assert 0.2 < out["read_ratio"] < 5 and "| iter_split" in markdown(out)
    lines = "\n".join(goal_lines({"integrity": out}))
    assert "read throughput with integrity checks / without" in lines
