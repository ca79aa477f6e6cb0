"""Known wrong versions of the method's core: each is applied to the source alone, the tests that should catch it
run, and the source restored. `python experiments/known_mutants.py [INDEX ...]` prints KILLED or SURVIVED per
change and exits 1 if any survived. A hand-picked complement to mutation testing (docs/TESTING.md): each row is
a plausible bug a reviewer named, with the test that must fail on it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file, the right line(s), a wrong version, the test that must fail on it)
M = [
 ("sassl/learners/mocov2.py", "info_nce(q1, k2_all", "info_nce(q1, k1_all", "core/test_core_pinned.py::test_mocov2_pairs_each_view_with_the_other_views_keys"),
 ("sassl/learners/mocov2.py", "F.normalize(keys, dim=1).to(self.queue.dtype)", "keys.to(self.queue.dtype)", "core/test_core_pinned.py::test_mocov2_queue_negatives_and_contents_after_a_step"),
 ("sassl/learners/mocov2.py", "queue = self.queue.clone() if self.queue_size else None", "queue = None", "core/test_core_pinned.py::test_mocov2_queue_negatives_and_contents_after_a_step"),
 ("sassl/learners/byol.py", "byol_loss(p1, z2)", "byol_loss(p1, z1)", "core/test_core_pinned.py::test_byol_regresses_each_prediction_on_the_other_views_target"),
 ("sassl/learners/losses.py", 'logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))', "logits = logits", "core/test_core_pinned.py::test_simclr_nt_xent_against_loops"),
 ("sassl/learners/momentum.py", "pt.mul_(m).add_(po.detach(), alpha=1 - m)", "pt.mul_(1 - m).add_(po.detach(), alpha=m)", "core/test_core_pinned.py::test_ema_update_written_out"),
 ("sassl/learners/momentum.py", "return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2", "return base + (1 - base) * step / max(1, total_steps)", "core/test_core_pinned.py::test_momentum_schedule_written_out"),
 ("sassl/eval/knn.py", "(best_sim / temperature).exp()", "torch.ones_like(best_sim)", "core/test_core_pinned.py::test_knn_votes_are_cosine_weighted_at_t_007"),
 ("sassl/eval/knn.py", "q = F.normalize(q.float(), dim=1)", "q = q.float()", "core/test_core_pinned.py::test_knn_votes_are_cosine_weighted_at_t_007"),
 ("sassl/eval/linear.py", "nesterov=True", "nesterov=False", "core/test_core_pinned.py::test_linear_probe_optimiser_settings_are_pinned"),
 ("sassl/stylizer/augment.py", "return r[0] + (r[1] - r[0]) * torch.rand(n, generator=g)", "return r[0] + 0.01 + (r[1] - r[0] - 0.02) * torch.rand(n, generator=g)", "core/test_core_pinned.py::test_sassl_draws_follow_the_papers_distributions"),
 ("sassl/stylizer/augment.py", "apply = torch.rand(n, generator=g) < self.p", "apply = torch.rand(n, generator=g) < self.p - 0.05", "core/test_core_pinned.py::test_sassl_draws_follow_the_papers_distributions"),
 ("sassl/stylizer/augment.py", 'z_content = self.stylizer.embed(xs[d["sel"]], self.embed_size)', 'z_content = self.stylizer.embed(xs[d["sel"]])', "core/test_core_pinned.py::test_sassl_at_another_embed_size_against_the_formula"),
 ("sassl/stylizer/augment.py", 'z = self.stylizer.embed(xs[d["need"]], self.embed_size)', 'z = self.stylizer.embed(xs[d["need"]])', "core/test_core_pinned.py::test_sassl_at_another_embed_size_against_the_formula"),
 ("sassl/views.py", 'x = torch.where(d["solarize"][:, None, None, None] & (x >= 0.5), 1 - x, x)', 'x = torch.where(d["solarize"][:, None, None, None] & (x >= 0.25), 1 - x, x)', "core/test_core_pinned.py::test_view_pipeline_equals_torchvisions_ops_in_order"),
 ("sassl/views.py", "for pos in range(4):\n            for op_i in range(4):\n                rows = (p.jitter & (p.order[:, pos] == op_i)).nonzero().squeeze(1)", "for pos in range(4):\n            for op_i in range(4):\n                rows = (p.jitter & (op_i == pos)).nonzero().squeeze(1)", "core/test_core_pinned.py::test_view_pipeline_equals_torchvisions_ops_in_order"),
 ("sassl/eval/tsne.py", "covmean = linalg.sqrtm(s_a @ s_b)", "covmean = linalg.sqrtm(s_a) @ linalg.sqrtm(s_b)", "core/test_core_pinned.py::test_frechet_distance_with_correlated_covariances"),
 ("sassl/training/run.py", "    run.state, run.step = state, state[\"step\"]", "    run.state, run.step = None, 0", "training/test_train.py::test_resume_reproduces_uninterrupted_run"),
 ("sassl/training/run.py", '    model.load_state_dict(run.state.pop("model"))', '    run.state.pop("model")', "training/test_train.py::test_resume_reproduces_uninterrupted_run"),
 # the GPU path (tests/scale/test_device_semantics.py): what CUDA and NCCL would show, caught on the CPU
 ("sassl/learners/losses.py", "info_nce = float32(info_nce)\n", "\n", "scale/test_device_semantics.py::test_losses_are_float32_under_bf16_autocast"),
 ("sassl/precision.py", 'return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"', 'return "bf16" if torch.cuda.is_bf16_supported() else "fp16"', "scale/test_device_semantics.py::test_precision_auto_per_device"),
 ("sassl/training/step.py", '    model = getattr(model, "_orig_mod", model)\n    return model if isinstance(model, nn.parallel.DistributedDataParallel) else None', '    return model if isinstance(model, nn.parallel.DistributedDataParallel) else None', "scale/test_device_semantics.py::test_accumulation_keeps_no_sync_under_compile"),
 ("sassl/data/decode.py", "        if encoded and orientation == 1:", "        if encoded:", "scale/test_device_semantics.py::test_exif_rotated_jpeg_is_decoded_on_the_host_for_device_decoding"),
 ("sassl/dist.py", '    if dev == "cpu" or (dev == "auto" and not torch.cuda.is_available()):', '    if not torch.cuda.is_available():', "scale/test_device_semantics.py::test_backend_follows_the_training_device"),
 ("sassl/dist.py", "    if all_true(found is not None):\n        return found", "    if found is not None:\n        return found", "scale/test_device_semantics.py::test_cached_features_decided_once_for_all_ranks"),
 ("sassl/devices.py", "    extra = -len(idx) % multiple", "    extra = 0", "scale/test_device_semantics.py::test_stylized_and_blurred_subsets_take_few_shapes"),
]


def main(only: list[str]) -> int:
    survived = 0
    for i, (f, old, new, test) in enumerate(M):
        if only and str(i) not in only:
            continue
        path = ROOT / f
        src = path.read_text()
        if src.count(old) != 1:
            raise SystemExit(f"{i}: {f} no longer holds exactly one {old!r}; update this table")
        path.write_text(src.replace(old, new))
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/" + test],
                               cwd=ROOT, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "2"})
        finally:
            path.write_text(src)
        survived += r.returncode == 0
        print(i, "SURVIVED" if r.returncode == 0 else "KILLED", f, "|", new[:70].replace("\n", " "), flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
