from pgolf.cli import main

main()
