module cardano-forge/forge-guard

go 1.22
