from twopc.cli import main

main()
