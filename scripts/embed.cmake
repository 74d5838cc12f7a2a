# Turns a file into a C array, so the binary carries it (cmake -P; IN, OUT, NAME).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR len "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}"
     "/* Generated from ${IN} by scripts/embed.cmake: do not edit. */\n"
     "#include \"server/dashboard.h\"\n"
     "const unsigned char ${NAME}[] = {${bytes}0x00};\n"
     "const size_t ${NAME}_len = ${len};\n")
