"""python -m modelconv"""

from .cli import main

main(prog_name="modelconv")
