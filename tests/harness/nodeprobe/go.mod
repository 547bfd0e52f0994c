module cardanoforge.invalid/nodeprobe

go 1.22
