"""Edit with a stage-2 checkpoint: `python edit.py ckpt=PATH mode=img2img|inpaint|interpolate ...` (docs/editing.md)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import edit


@hydra.main(version_base="1.3", config_path="conf", config_name="edit")
def main(cfg: DictConfig) -> None:
    edit.run(cfg)


if __name__ == "__main__":
    main()
