from surrogate.library.cli import main

main()
