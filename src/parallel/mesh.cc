#include "ulysses/mesh.h"

#include "common/check.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

Status MeshShape::validate() const {
  constexpr std::string_view kApi = "ulysses::MeshShape";
  if (dp < 1) return arg_error(kApi, "dp", "must be positive", dp, ">= 1");
  if (cp < 1) return arg_error(kApi, "cp", "must be positive", cp, ">= 1");
  if (tp < 1) return arg_error(kApi, "tp", "must be positive", tp, ">= 1");
  return Status::ok();
}

Result<Mesh> Mesh::create(MeshShape shape, int world_size) {
  ULYSSES_RETURN_IF_ERROR(shape.validate());
  if (shape.world_size() != world_size) {
    return arg_error(
        "ulysses::Mesh::create", "world_size", "does not equal dp * cp * tp", world_size,
        str_cat(shape.dp, " * ", shape.cp, " * ", shape.tp, " = ", shape.world_size()));
  }
  return Mesh(shape);
}

MeshCoord Mesh::coord(int rank) const {
  MeshCoord c;
  c.cp = rank % shape_.cp;
  c.tp = (rank / shape_.cp) % shape_.tp;
  c.dp = rank / (shape_.cp * shape_.tp);
  return c;
}

int Mesh::rank(MeshCoord c) const { return (c.dp * shape_.tp + c.tp) * shape_.cp + c.cp; }

int Mesh::degree(MeshAxis axis) const {
  switch (axis) {
    case MeshAxis::kDp:
      return shape_.dp;
    case MeshAxis::kCp:
      return shape_.cp;
    case MeshAxis::kTp:
      return shape_.tp;
  }
  return 1;
}

std::vector<int> Mesh::group(MeshAxis axis, int rank_in_group) const {
  const MeshCoord base = coord(rank_in_group);
  std::vector<int> ranks;
  const int n = degree(axis);
  ranks.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    MeshCoord c = base;
    if (axis == MeshAxis::kDp) c.dp = i;
    if (axis == MeshAxis::kCp) c.cp = i;
    if (axis == MeshAxis::kTp) c.tp = i;
    ranks.push_back(rank(c));
  }
  return ranks;
}

int Mesh::group_color(MeshAxis axis, int r) const {
  const MeshCoord c = coord(r);
  switch (axis) {
    case MeshAxis::kDp:
      return c.tp * shape_.cp + c.cp;
    case MeshAxis::kCp:
      return c.dp * shape_.tp + c.tp;
    case MeshAxis::kTp:
      return c.dp * shape_.cp + c.cp;
  }
  return 0;
}

}  // namespace ulysses
