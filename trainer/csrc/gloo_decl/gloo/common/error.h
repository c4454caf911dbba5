#pragma once
// Declarations for torch's ProcessGroupGloo.hpp; see ../README.md.
