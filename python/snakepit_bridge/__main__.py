"""``python3 -m snakepit_bridge --adapter pkg.module.Class --socket PATH ...``"""

from snakepit_bridge.server import main

if __name__ == "__main__":
    main()
