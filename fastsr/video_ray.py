"""One long video over a Ray cluster: ``fastsr upscale long.mp4 -s 2 --ray [ADDRESS]`` and
``fastsr.upscale_video(..., ray_address=...)``.

:func:`fastsr.upscale_video` plans the job (keyframe-aligned segments in the hidden work folder beside the
output, which every node must see), :func:`run_segments` has each pending segment upscaled by a Ray actor
holding one :class:`fastsr.Upscaler` (the model loaded once per worker), and the segments are then joined in
order, as without Ray. (This module is handed the job and the per-segment function; it imports no video
code.) A segment is done when its file has been
renamed into the work folder, whole, so each is done exactly once: a worker that dies is restarted and its
segment retried from the start, and a run stopped at any point resumes from the finished segments, on Ray or
not. Ray is connected and kept quiet as for images (:mod:`fastsr.distributed`).
"""

from __future__ import annotations

from .distributed import check_reachable, connect, parse_address, quiet, require_ray

MAX_TASK_RETRIES = 2  # a segment whose worker dies (or raises) is tried this many more times


class _SegmentWorker:
    """One Ray actor: an Upscaler built once, then segments."""

    def __init__(self, net, device: str, precision: str, threads: int | None, segment_fn) -> None:
        import torch

        from .upscaler import Upscaler

        if threads:
            torch.set_num_threads(max(1, threads))
        self.upscaler = Upscaler(net, device=device, precision=precision)
        self.segment_fn = segment_fn

    def run(self, work_dir: str, index: int, tile: int | None, batch: int | None) -> int:
        self.segment_fn(work_dir, index, model=self.upscaler, tile=tile, batch=batch)
        return index


def run_segments(job, segment_fn, net, *, precision: str, ray_address: str | None = None, tile: int | None = None,
                 batch: int | None = None, num_workers: int | None = None, gpus_per_worker: float = 0,
                 verbose: bool = False, progress: bool = False) -> None:
    """Upscale the pending segments of ``job`` (a planned :class:`fastsr.video.VideoJob`) on Ray actors,
    each calling ``segment_fn(work_dir, index, model=upscaler, tile=, batch=)``
    (:func:`fastsr.video.upscale_segment`) with one Upscaler of ``net`` in ``precision`` (the job's).

    ``ray_address``: as :func:`fastsr.distributed.upscale_dataset` takes it ("" / "local": a local instance).
    ``num_workers``: actors (default: one per GPU with ``gpus_per_worker``, else one per node); each uses
    ``gpus_per_worker`` GPUs (0: CPU threads, the node's CPUs shared among its workers).
    """
    from tqdm import tqdm

    address = parse_address(ray_address)
    ray = require_ray()
    if gpus_per_worker < 0 or (num_workers is not None and num_workers < 1):
        raise ValueError(f"num_workers must be >= 1 and gpus_per_worker >= 0, got {num_workers!r}, {gpus_per_worker!r}")
    pending = job.pending()
    if not pending:
        return
    if address is not None:
        check_reachable(address)
    with quiet(verbose), connect(ray, address, verbose):
        from ray.util import ActorPool

        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)
        workers = num_workers or (max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else max(1, nodes))
        workers = min(workers, len(pending))
        threads = None if gpus_per_worker else max(1, int(cpus // workers))
        options = {"num_gpus": gpus_per_worker} if gpus_per_worker else {"num_cpus": min(float(threads), cpus / workers)}
        actor = ray.remote(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)(_SegmentWorker)
        net_ref = ray.put(net)
        device = "cuda" if gpus_per_worker else "cpu"
        pool = ActorPool([actor.options(**options).remote(net_ref, device, precision, threads, segment_fn)
                          for _ in range(workers)])
        done = len(job.segments) - len(pending)
        with tqdm(total=len(job.segments), initial=done, unit="segment", disable=not progress, leave=False) as bar:
            for _ in pool.map_unordered(lambda a, i: a.run.remote(job.work, i, tile, batch), pending):
                bar.update(1)
