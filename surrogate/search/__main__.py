from surrogate.search.cli import main

main()
