//! PBS's language (hpcbox-pbs) to the scheduler's model (hpcbox-sched): chunks as amounts,
//! placement, walltime, dependencies.

use hpcbox_pbs::depend::{DependKind as PbsDepend, DependList, DependOn};
use hpcbox_pbs::place::{Arrangement as PbsArrangement, Place as PbsPlace, Sharing as PbsSharing};
use hpcbox_pbs::resource::ResourceValue;
use hpcbox_pbs::select::{Chunk, Select};
use hpcbox_sched::{
    Arrangement, ChunkSpec, DependKind, Dependency, JobId as SchedId, Place, Resources, Sharing,
};

/// The scheduler's chunks for a PBS select statement (completed with PBS's defaults).
pub fn chunks(select: &Select) -> Vec<ChunkSpec> {
    select
        .chunks()
        .iter()
        .map(|chunk| ChunkSpec::new(chunk.count(), chunk_resources(chunk)))
        .collect()
}

fn chunk_resources(chunk: &Chunk) -> Resources {
    let mut resources = Resources::new(
        u64::try_from(chunk.ncpus()).unwrap_or(0),
        chunk
            .get("mem")
            .and_then(ResourceValue::as_size)
            .map_or(0, |size| size.kilobytes()),
        chunk
            .get("ngpus")
            .and_then(ResourceValue::as_long)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
    );
    for (name, value) in chunk.resources() {
        if matches!(name, "ncpus" | "mem" | "ngpus" | "mpiprocs" | "ompthreads") {
            continue;
        }
        if let Some(amount) = value.as_long().and_then(|n| u64::try_from(n).ok()) {
            resources = resources.with_custom(name, amount);
        }
    }
    resources
}

/// The scheduler's placement for a PBS `place=`.
pub fn place(place: &PbsPlace) -> Place {
    let arrangement = match place.effective_arrangement() {
        PbsArrangement::Free => Arrangement::Free,
        PbsArrangement::Pack => Arrangement::Pack,
        PbsArrangement::Scatter => Arrangement::Scatter,
        PbsArrangement::VScatter => Arrangement::Vscatter,
    };
    let sharing = match place.sharing {
        Some(PbsSharing::Excl) => Sharing::Excl,
        Some(PbsSharing::ExclHost) => Sharing::Exclhost,
        Some(PbsSharing::Shared) | None => Sharing::Shared,
    };
    Place::new(arrangement, sharing)
}

/// The scheduler's dependencies for `-W depend=`, on jobs of this server (by sequence number).
/// Kinds the scheduler has no use for (`on`, `runone`, the `sync*` ones) are left out.
pub fn dependencies(list: &DependList) -> Vec<Dependency> {
    let mut out = Vec::new();
    for dep in &list.0 {
        let Some(kind) = depend_kind(dep.kind) else {
            continue;
        };
        if let DependOn::Jobs(jobs) = &dep.on {
            for job in jobs {
                let id = match job.id.array {
                    hpcbox_pbs::jobid::ArrayPart::Index(i) => SchedId::subjob(job.id.seq, i),
                    _ => SchedId::job(job.id.seq),
                };
                out.push(Dependency::new(kind, id));
            }
        }
    }
    out
}

fn depend_kind(kind: PbsDepend) -> Option<DependKind> {
    Some(match kind {
        PbsDepend::After => DependKind::After,
        PbsDepend::AfterOk => DependKind::AfterOk,
        PbsDepend::AfterNotOk => DependKind::AfterNotOk,
        PbsDepend::AfterAny => DependKind::AfterAny,
        PbsDepend::Before => DependKind::Before,
        PbsDepend::BeforeOk => DependKind::BeforeOk,
        PbsDepend::BeforeNotOk => DependKind::BeforeNotOk,
        PbsDepend::BeforeAny => DependKind::BeforeAny,
        _ => return None,
    })
}
