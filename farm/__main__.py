from farm.cli.commands import main

main()
