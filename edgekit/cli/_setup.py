"""``edgekit setup``: converters that live in an environment of their own."""

from __future__ import annotations

import click


@click.group()
def setup() -> None:
    """Prepare converters that need their own Python environment."""


@setup.command("onnx2tf")
@click.option("--python", "python", metavar="PATH", help="A Python >= 3.12 interpreter [default: the newest found].")
def setup_onnx2tf(python: str | None) -> None:
    """Create the venv that runs onnx2tf (ONNX -> TFLite); packages come from pip's configured registry."""
    from edgekit.converters._onnx2tf import ENV_VARIABLE
    from edgekit.converters._onnx2tf import setup as create

    env = create(python, log=lambda message: click.echo(message, err=True))
    click.echo(f"onnx2tf ready in {env} (or point {ENV_VARIABLE} at another python that has it)")


@setup.command("rknn")
@click.option("--python", "python", metavar="PATH", help="A Python 3.8-3.12 interpreter [default: this one, else the "
              "newest found].")
def setup_rknn(python: str | None) -> None:
    """Create the venv that runs rknn-toolkit2 (rknn-int8, ~1.5 GB); packages come from pip's configured registry."""
    from edgekit.converters._rknn_env import ENV_VARIABLE
    from edgekit.converters._rknn_env import setup as create

    env = create(python, log=lambda message: click.echo(message, err=True))
    click.echo(f"rknn-toolkit2 ready in {env} (or point {ENV_VARIABLE} at another python that has it)")


@setup.command("imx500")
@click.option("--python", "python", metavar="PATH", help="A Python 3.10-3.12 interpreter [default: this one, else the "
              "newest found].")
def setup_imx500(python: str | None) -> None:
    """Create the venv that runs Sony's MCT and imx500-converter (imx500, ~6.3 GB; needs Java 17); packages come
    from pip's configured registry."""
    from edgekit.converters._imx500_env import ENV_VARIABLE
    from edgekit.converters._imx500_env import setup as create

    env = create(python, log=lambda message: click.echo(message, err=True))
    click.echo(f"MCT and imx500-converter ready in {env} (or point {ENV_VARIABLE} at another python that has them)")
