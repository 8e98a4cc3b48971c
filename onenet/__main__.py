from onenet.main import main

main()
