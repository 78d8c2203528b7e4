"""Train tinyldm: `python train.py model=vqvae +experiment=mnist_cond` (docs: getting started)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import train
from tinyldm.utils.distributed import rewrite_child_argv
from tinyldm.utils.hydra_job import optimized_metric


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train.run(cfg)
    return optimized_metric(cfg, metrics)


if __name__ == "__main__":
    rewrite_child_argv()  # DDP ranks > 0 run their parent's single job, never a new sweep
    main()
