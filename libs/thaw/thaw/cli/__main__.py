from thaw.cli import main

main(prog_name="thaw")
