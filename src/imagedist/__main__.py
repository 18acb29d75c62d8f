from imagedist._cli import main

main()
